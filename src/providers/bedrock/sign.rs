//! AWS Signature Version 4 for Bedrock requests, with the AWS SDK's own signer
//! (`aws-sigv4`): every request is signed for service `bedrock` over `host`,
//! `content-type`, `x-amz-date` and, with temporary credentials, `x-amz-security-token`,
//! and the SHA-256 of the body. Paths are signed double-encoded, as for every AWS service
//! but S3 (a model id's `:` travels as `%3A` and is signed as `%253A`).

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};

/// Static AWS credentials and where they are used (region and service).
pub(super) struct Signer {
    identity: Identity,
    region: String,
    service: &'static str,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("region", &self.region)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Signer {
    pub(super) fn new(
        access_key_id: &str,
        secret_access_key: &str,
        session_token: Option<&str>,
        region: &str,
        service: &'static str,
    ) -> Self {
        let credentials = Credentials::new(
            access_key_id,
            secret_access_key,
            session_token.map(str::to_string),
            None,
            "memproxy-config",
        );
        Self {
            identity: credentials.into(),
            region: region.to_string(),
            service,
        }
    }

    /// Adds `authorization`, `x-amz-date` and (temporary credentials) the
    /// `x-amz-security-token` header to `headers`, signing a POST of `body` to `url`
    /// (already percent-encoded, with a host) at `time`.
    pub(super) fn sign(
        &self,
        url: &str,
        headers: &mut HeaderMap,
        body: &[u8],
        time: SystemTime,
    ) -> Result<(), String> {
        // The signer panics on a URL without a host.
        if url
            .parse::<axum::http::Uri>()
            .ok()
            .and_then(|u| u.host().map(str::len))
            .unwrap_or(0)
            == 0
        {
            return Err(format!(
                "cannot sign a request to `{url}`: it names no host"
            ));
        }
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name(self.service)
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| format!("cannot sign the request: {e}"))?
            .into();
        // Only headers nothing between here and AWS rewrites are signed; `host` comes
        // from the URL.
        let signed: Vec<(&str, &str)> = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| ("content-type", v))
            .into_iter()
            .collect();
        let request =
            SignableRequest::new("POST", url, signed.into_iter(), SignableBody::Bytes(body))
                .map_err(|e| format!("cannot sign a request to {url}: {e}"))?;
        let (instructions, _) = sign(request, &params)
            .map_err(|e| format!("cannot sign a request to {url}: {e}"))?
            .into_parts();
        let (added, _) = instructions.into_parts();
        for h in added {
            let name = HeaderName::from_static(h.name());
            let mut value = HeaderValue::from_str(h.value())
                .map_err(|_| format!("the signer made an unusable `{}` header", h.name()))?;
            value.set_sensitive(h.sensitive() || name == header::AUTHORIZATION);
            headers.insert(name, value);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    /// 2015-08-30T12:36:00Z, the time of the AWS SigV4 test suite.
    fn suite_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    #[test]
    fn matches_the_aws_test_suite_post_vanilla() {
        let signer = Signer::new(AKID, SECRET, None, "us-east-1", "service");
        let mut h = HeaderMap::new();
        signer
            .sign("https://example.amazonaws.com/", &mut h, b"", suite_time())
            .unwrap();
        assert_eq!(h["x-amz-date"], "20150830T123600Z");
        assert_eq!(
            h["authorization"],
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        );
        assert!(h["authorization"].is_sensitive());
        assert!(h.get("x-amz-security-token").is_none());
    }

    #[test]
    fn session_token_is_sent_and_signed() {
        let signer = Signer::new(AKID, SECRET, Some("tok/en=="), "eu-west-3", "bedrock");
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert("x-request-id", HeaderValue::from_static("r1"));
        signer
            .sign(
                "https://bedrock-runtime.eu-west-3.amazonaws.com/model/a.b-v1%3A0/converse",
                &mut h,
                b"{}",
                suite_time(),
            )
            .unwrap();
        assert_eq!(h["x-amz-security-token"], "tok/en==");
        let auth = h["authorization"].to_str().unwrap();
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-3/bedrock/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="
            ),
            "{auth}"
        );
    }

    #[test]
    fn a_url_without_host_is_an_error_not_a_panic() {
        let signer = Signer::new(AKID, SECRET, None, "us-east-1", "bedrock");
        let mut h = HeaderMap::new();
        assert!(signer
            .sign("/model/x/converse", &mut h, b"", suite_time())
            .is_err());
    }
}
