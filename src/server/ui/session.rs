//! Dashboard sign-in sessions: `POST /ui/login` checks a key once and hands the browser an
//! opaque random session id in an `HttpOnly; SameSite=Strict` cookie; the server keeps the
//! principal it stands for (by key hash, so a revoked key ends its sessions), its expiry
//! and a CSRF token that every state-changing request of the session must echo in
//! `x-csrf-token`. The key itself is never stored in the browser, a URL or a log line.
//!
//! Only requests that carry no key of their own look at the cookie, so API clients and
//! the model path pay nothing for it.

use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue, Method};
use dashmap::DashMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::Principal;
use crate::keys::Keys;

/// The session cookie's name.
pub const COOKIE: &str = "memproxy_session";
/// The header a session's state-changing requests carry its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts after sign-in.
pub const TTL_MS: i64 = 12 * 3_600_000;
/// Most live sessions kept; signing in beyond it ends the oldest.
const MAX_SESSIONS: usize = 10_000;

/// Who a session signed in as (a key by its hash, so revoking the key ends the session).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Who {
    Master,
    Open,
    Key(String),
}

#[derive(Debug, Clone)]
struct Entry {
    who: Who,
    csrf: String,
    expires_ms: i64,
}

/// A live session, resolved.
#[derive(Debug, Clone)]
pub struct UiSession {
    pub principal: Principal,
    pub csrf: String,
    pub expires_ms: i64,
}

/// Why a request's session was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    #[error("the sign-in session is unknown or expired; sign in again")]
    Expired,
    #[error("a state-changing request of a dashboard session needs its `x-csrf-token` header")]
    Csrf,
    #[error("cross-origin request refused")]
    Origin,
}

/// The live sessions, keyed by the SHA-256 of their id (a memory dump does not hand out
/// usable cookies).
#[derive(Default)]
pub struct UiSessions {
    by_hash: DashMap<[u8; 32], Entry>,
}

fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The session id a request's `Cookie` header carries, if any.
pub fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE && !value.is_empty()).then_some(value)
        })
}

/// Whether a request came from a page of this server: when the browser names an
/// `Origin`, its host must be the `Host` the request was sent to.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// Methods that change nothing, which need no CSRF token.
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl UiSessions {
    /// Starts a session for `principal`; returns its id (for the cookie) and CSRF token.
    pub fn create(&self, principal: &Principal, now_ms: i64) -> (String, UiSession) {
        self.by_hash.retain(|_, e| e.expires_ms > now_ms);
        if self.by_hash.len() >= MAX_SESSIONS {
            let oldest = self
                .by_hash
                .iter()
                .min_by_key(|e| e.expires_ms)
                .map(|e| *e.key());
            if let Some(k) = oldest {
                self.by_hash.remove(&k);
            }
        }
        let who = match principal {
            Principal::Master => Who::Master,
            Principal::Open => Who::Open,
            Principal::VirtualKey(k) => Who::Key(k.row.hash.clone()),
        };
        let id = random_token();
        let entry = Entry {
            who,
            csrf: random_token(),
            expires_ms: now_ms + TTL_MS,
        };
        let session = UiSession {
            principal: principal.clone(),
            csrf: entry.csrf.clone(),
            expires_ms: entry.expires_ms,
        };
        self.by_hash
            .insert(Sha256::digest(id.as_bytes()).into(), entry);
        (id, session)
    }

    /// The live session of a cookie value; its key must still exist and be unexpired.
    pub fn get(&self, id: &str, keys: &Keys, now_ms: i64) -> Option<UiSession> {
        let hash: [u8; 32] = Sha256::digest(id.as_bytes()).into();
        let entry = self.by_hash.get(&hash).map(|e| e.value().clone())?;
        if entry.expires_ms <= now_ms {
            self.by_hash.remove(&hash);
            return None;
        }
        let principal = match &entry.who {
            Who::Master => Principal::Master,
            Who::Open => Principal::Open,
            Who::Key(h) => match keys.lookup(h) {
                Some(k) if k.check_expiry(now_ms).is_ok() => Principal::VirtualKey(k),
                _ => {
                    self.by_hash.remove(&hash);
                    return None;
                }
            },
        };
        Some(UiSession {
            principal,
            csrf: entry.csrf,
            expires_ms: entry.expires_ms,
        })
    }

    /// Ends a session.
    pub fn remove(&self, id: &str) {
        self.by_hash
            .remove(&<[u8; 32]>::from(Sha256::digest(id.as_bytes())));
    }

    /// Authenticates an API request by its session cookie: none when it carries none. A
    /// state-changing request must come from this origin and carry the CSRF token.
    pub fn authenticate(
        &self,
        method: &Method,
        headers: &HeaderMap,
        keys: &Keys,
        now_ms: i64,
    ) -> Option<Result<Arc<UiSession>, SessionError>> {
        let id = cookie_value(headers)?;
        Some(self.check(id, method, headers, keys, now_ms).map(Arc::new))
    }

    fn check(
        &self,
        id: &str,
        method: &Method,
        headers: &HeaderMap,
        keys: &Keys,
        now_ms: i64,
    ) -> Result<UiSession, SessionError> {
        let session = self.get(id, keys, now_ms).ok_or(SessionError::Expired)?;
        if !is_safe(method) {
            if !same_origin(headers) {
                return Err(SessionError::Origin);
            }
            let sent = headers
                .get(CSRF_HEADER)
                .map(HeaderValue::as_bytes)
                .unwrap_or_default();
            if !bool::from(sent.ct_eq(session.csrf.as_bytes())) {
                return Err(SessionError::Csrf);
            }
        }
        Ok(session)
    }
}

/// The `Set-Cookie` value of a new session (`Secure` when the browser reached us over
/// HTTPS, as a TLS-terminating proxy in front reports with `x-forwarded-proto`).
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        TTL_MS / 1000,
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that ends a session in the browser.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{hash_key, hex, KeyRow};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn sessions_expire_need_csrf_for_changes_and_end_with_their_key() {
        let keys = Keys::from_rows(vec![KeyRow {
            hash: hex(&hash_key("sk-virtual-1")),
            ..Default::default()
        }]);
        let s = UiSessions::default();
        let (id, made) = s.create(&Principal::Master, 1000);
        let cookie = format!("other=1; {COOKIE}={id}");
        let get = headers(&[("cookie", &cookie)]);
        let ok = s
            .authenticate(&Method::GET, &get, &keys, 2000)
            .unwrap()
            .unwrap();
        assert_eq!(ok.principal, Principal::Master);
        assert_eq!(
            s.authenticate(&Method::POST, &get, &keys, 2000)
                .unwrap()
                .unwrap_err(),
            SessionError::Csrf
        );
        let post = headers(&[
            ("cookie", &cookie),
            ("x-csrf-token", &made.csrf),
            ("host", "127.0.0.1:8764"),
            ("origin", "http://127.0.0.1:8764"),
        ]);
        assert!(s
            .authenticate(&Method::DELETE, &post, &keys, 2000)
            .unwrap()
            .is_ok());
        let foreign = headers(&[
            ("cookie", &cookie),
            ("x-csrf-token", &made.csrf),
            ("host", "127.0.0.1:8764"),
            ("origin", "http://evil.example"),
        ]);
        assert_eq!(
            s.authenticate(&Method::POST, &foreign, &keys, 2000)
                .unwrap()
                .unwrap_err(),
            SessionError::Origin
        );
        assert!(s
            .authenticate(&Method::GET, &HeaderMap::new(), &keys, 2000)
            .is_none());
        assert_eq!(
            s.authenticate(&Method::GET, &get, &keys, 1000 + TTL_MS)
                .unwrap()
                .unwrap_err(),
            SessionError::Expired
        );

        let vk = keys.find("sk-virtual-1").unwrap();
        let (kid, _) = s.create(&Principal::VirtualKey(vk.clone()), 0);
        assert!(s.get(&kid, &keys, 1).is_some());
        let emptied = Keys::default();
        assert!(
            s.get(&kid, &emptied, 1).is_none(),
            "a revoked key ends its sessions"
        );
        s.remove(&id);
        assert!(s.get(&id, &keys, 1).is_none());
        assert!(set_cookie("abc", true).ends_with("; Secure"));
    }
}
