//! TLS for PostgreSQL connections, on the binary's one rustls crypto provider (ring).
//!
//! `sslmode` as libpq spells it: `disable`, `allow` and `prefer` connect in plain text
//! (memproxy does not try TLS first); `require` encrypts without checking the server's
//! certificate (libpq's meaning of `require`); `verify-ca` and `verify-full` check the
//! certificate chain against the platform's trust store and the host name (both as
//! `verify-full`: stricter than libpq's `verify-ca`, never weaker).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_platform_verifier::BuilderVerifierExt;
use tokio_postgres_rustls::MakeRustlsConnect;

/// What a connection does about TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plain text.
    Plain,
    /// Encrypted; the certificate is not checked.
    Encrypt,
    /// Encrypted; chain and host name checked.
    Verify,
}

impl Mode {
    /// The mode of an `sslmode` value.
    pub fn parse(sslmode: &str) -> Result<Self, String> {
        Ok(match sslmode {
            "disable" | "allow" | "prefer" => Mode::Plain,
            "require" => Mode::Encrypt,
            "verify-ca" | "verify-full" => Mode::Verify,
            other => {
                return Err(format!(
                    "sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, \
                     verify-full"
                ))
            }
        })
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The connector for `mode` (with [`Mode::Plain`] it is never used: the connection's
/// `sslmode` is `disable`).
pub fn connector(mode: Mode) -> Result<MakeRustlsConnect, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?;
    let config = match mode {
        Mode::Verify => builder
            .with_platform_verifier()
            .map_err(|e| format!("TLS set-up (platform trust store): {e}"))?
            .with_no_client_auth(),
        Mode::Plain | Mode::Encrypt => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(provider())))
            .with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

/// `sslmode=require`: any certificate is accepted, but the handshake's signatures are
/// still verified (the connection is encrypted to whoever holds the presented key).
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
