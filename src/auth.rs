//! Authentication of callers: the master key (compared in constant time) or a virtual
//! key (looked up by its SHA-256), read from `Authorization: Bearer …`, `x-api-key` or
//! `api-key`.

use std::sync::Arc;

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::config::Secret;
use crate::keys::{Keys, VirtualKey};

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Principal {
    /// The master key.
    Master,
    /// No master key is configured: everybody is admitted (loopback only).
    Open,
    /// A virtual key (`/key/generate`).
    VirtualKey(Arc<VirtualKey>),
}

impl PartialEq for Principal {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Principal::Master, Principal::Master) | (Principal::Open, Principal::Open) => true,
            (Principal::VirtualKey(a), Principal::VirtualKey(b)) => a.row.hash == b.row.hash,
            _ => false,
        }
    }
}

impl Principal {
    /// The virtual key, if the caller used one.
    pub fn key(&self) -> Option<&Arc<VirtualKey>> {
        match self {
            Principal::VirtualKey(k) => Some(k),
            _ => None,
        }
    }

    /// May manage keys and read everybody's usage (master key, or open mode).
    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::Master | Principal::Open)
    }
}

/// Why a caller was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing API key: send it as `Authorization: Bearer <key>` or `x-api-key: <key>`")]
    Missing,
    #[error("invalid API key")]
    Invalid,
    #[error("API key expired at {0}")]
    Expired(String),
}

/// Checks credentials against the configured keys.
pub struct Auth {
    master_key: Option<Secret<String>>,
}

/// The key a request carries, if any.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        let key = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .unwrap_or(v);
        return Some(key.trim());
    }
    ["x-api-key", "api-key"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .map(str::trim)
}

impl Auth {
    pub fn new(master_key: Option<Secret<String>>) -> Self {
        Self { master_key }
    }

    /// Whether `key` is the master key (constant-time).
    pub fn is_master(&self, key: &str) -> bool {
        self.master_key
            .as_ref()
            .is_some_and(|m| bool::from(key.as_bytes().ct_eq(m.expose().as_bytes())))
    }

    /// True when requests must carry a key.
    pub fn required(&self) -> bool {
        self.master_key.is_some()
    }

    /// Authenticates a request by its headers: the master key, else a virtual key (also
    /// without a master key, so a key's user binding holds in open mode too).
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        keys: &Keys,
        now_ms: i64,
    ) -> Result<Principal, AuthError> {
        let presented = presented_key(headers);
        if let Some(master) = &self.master_key {
            let key = presented.ok_or(AuthError::Missing)?;
            if bool::from(key.as_bytes().ct_eq(master.expose().as_bytes())) {
                return Ok(Principal::Master);
            }
        }
        if let Some(vk) = presented.and_then(|k| keys.find(k)) {
            if let Some(at) = vk.row.expires_ms.filter(|&at| at <= now_ms) {
                return Err(AuthError::Expired(crate::analytics::timefmt::format_ms(at)));
            }
            return Ok(Principal::VirtualKey(vk));
        }
        if self.master_key.is_none() {
            Ok(Principal::Open)
        } else {
            Err(AuthError::Invalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(k: &str, v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
        m
    }

    #[test]
    fn accepts_bearer_and_x_api_key() {
        let a = Auth::new(Some(Secret::new("sk-1234".into())));
        let k = Keys::default();
        assert_eq!(
            a.authenticate(&h("authorization", "Bearer sk-1234"), &k, 0),
            Ok(Principal::Master)
        );
        assert_eq!(
            a.authenticate(&h("x-api-key", "sk-1234"), &k, 0),
            Ok(Principal::Master)
        );
        assert_eq!(
            a.authenticate(&h("x-api-key", "sk-123"), &k, 0),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            a.authenticate(&HeaderMap::new(), &k, 0),
            Err(AuthError::Missing)
        );
        assert_eq!(
            Auth::new(None).authenticate(&HeaderMap::new(), &k, 0),
            Ok(Principal::Open)
        );
    }

    #[test]
    fn virtual_keys_authenticate_until_they_expire() {
        use crate::keys::{hash_key, hex, KeyRow};
        let keys = Keys::from_rows(vec![KeyRow {
            hash: hex(&hash_key("sk-virtual-1")),
            expires_ms: Some(5000),
            ..Default::default()
        }]);
        for master in [Some(Secret::new("sk-1234".to_string())), None] {
            let a = Auth::new(master);
            let p = a
                .authenticate(&h("authorization", "Bearer sk-virtual-1"), &keys, 4999)
                .unwrap();
            assert!(p.key().is_some() && !p.is_admin());
            assert!(matches!(
                a.authenticate(&h("x-api-key", "sk-virtual-1"), &keys, 5000),
                Err(AuthError::Expired(_))
            ));
        }
    }
}
