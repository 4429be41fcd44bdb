//! Authentication of callers: the master key (and, later, virtual keys), read from
//! `Authorization: Bearer …`, `x-api-key` or `api-key`, compared in constant time.

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The master key.
    Master,
    /// No master key is configured: everybody is admitted (loopback only).
    Open,
}

/// Why a caller was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing API key: send it as `Authorization: Bearer <key>` or `x-api-key: <key>`")]
    Missing,
    #[error("invalid API key")]
    Invalid,
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

    /// True when requests must carry a key.
    pub fn required(&self) -> bool {
        self.master_key.is_some()
    }

    /// Authenticates a request by its headers.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        let Some(master) = &self.master_key else {
            return Ok(Principal::Open);
        };
        let key = presented_key(headers).ok_or(AuthError::Missing)?;
        if bool::from(key.as_bytes().ct_eq(master.expose().as_bytes())) {
            Ok(Principal::Master)
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
        assert_eq!(
            a.authenticate(&h("authorization", "Bearer sk-1234")),
            Ok(Principal::Master)
        );
        assert_eq!(
            a.authenticate(&h("x-api-key", "sk-1234")),
            Ok(Principal::Master)
        );
        assert_eq!(
            a.authenticate(&h("x-api-key", "sk-123")),
            Err(AuthError::Invalid)
        );
        assert_eq!(a.authenticate(&HeaderMap::new()), Err(AuthError::Missing));
        assert_eq!(
            Auth::new(None).authenticate(&HeaderMap::new()),
            Ok(Principal::Open)
        );
    }
}
