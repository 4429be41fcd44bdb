//! Authentication of callers: the master key (compared in constant time) or a virtual
//! key (looked up by its SHA-256), read from `Authorization: Bearer …`, `x-api-key` or
//! `api-key`; or, for the dashboard (`/ui`), a session cookie made by signing in with
//! such a key, whose mutating requests must also carry the session's CSRF token in
//! `x-csrf-token`.

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
    #[error("the session has expired or was signed out; sign in again")]
    Session,
    #[error("missing or wrong `x-csrf-token` for this session")]
    Csrf,
}

/// The cookie that carries a dashboard session.
pub const SESSION_COOKIE: &str = "memproxy_session";
/// How long a session lasts after sign-in.
pub const SESSION_TTL_MS: i64 = 12 * 3_600_000;
/// Most sessions kept at once (expired ones are dropped first; then the oldest).
const MAX_SESSIONS: usize = 10_000;

/// Who a session stands for: the master key, open mode, or a virtual key by hash (read
/// again on every request, so a deleted or changed key takes effect at once).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
enum Subject {
    Master,
    Open,
    Key(String),
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Session {
    subject: Subject,
    csrf: String,
    expires_ms: i64,
}

/// A new session: its cookie token and CSRF token.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub token: String,
    pub csrf: String,
    pub expires_ms: i64,
}

/// Dashboard sessions, in memory (keyed by the SHA-256 of the cookie token) and, with
/// Redis ([`Sessions::share_through`]), in Redis too: there the shared copy decides, so a
/// session made on one instance works on every other and signing out anywhere ends it
/// everywhere. While Redis cannot be reached an instance goes on with the sessions it
/// knows.
#[derive(Default)]
pub struct Sessions {
    by_token: dashmap::DashMap<[u8; 32], Session>,
    shared: std::sync::OnceLock<crate::storage::redis::SharedSessions>,
}

fn random_token() -> String {
    let mut b = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .expect("the system random source works");
    crate::keys::hex(&b)
}

fn token_id(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

impl Sessions {
    /// Starts a session for a principal.
    pub fn create(&self, principal: &Principal, now_ms: i64) -> NewSession {
        if self.by_token.len() >= MAX_SESSIONS {
            self.by_token.retain(|_, s| s.expires_ms > now_ms);
            if self.by_token.len() >= MAX_SESSIONS {
                let oldest = self
                    .by_token
                    .iter()
                    .min_by_key(|e| e.value().expires_ms)
                    .map(|e| *e.key());
                if let Some(k) = oldest {
                    self.by_token.remove(&k);
                }
            }
        }
        let subject = match principal {
            Principal::Master => Subject::Master,
            Principal::Open => Subject::Open,
            Principal::VirtualKey(k) => Subject::Key(k.row.hash.clone()),
        };
        let new = NewSession {
            token: random_token(),
            csrf: random_token(),
            expires_ms: now_ms + SESSION_TTL_MS,
        };
        self.by_token.insert(
            token_id(&new.token),
            Session {
                subject,
                csrf: new.csrf.clone(),
                expires_ms: new.expires_ms,
            },
        );
        new
    }

    /// Ends a session.
    pub fn remove(&self, token: &str) {
        self.by_token.remove(&token_id(token));
    }

    /// Keeps sessions in Redis as well, from now on.
    pub fn share_through(&self, shared: crate::storage::redis::SharedSessions) {
        let _ = self.shared.set(shared);
    }

    /// Starts a session for a principal, shared with the other instances when there is
    /// Redis (where Redis cannot take it, the session works on this instance only).
    pub async fn start(&self, principal: &Principal, now_ms: i64) -> NewSession {
        let new = self.create(principal, now_ms);
        if let Some(shared) = self.shared.get() {
            let id = token_id(&new.token);
            let saved = match self.by_token.get(&id).map(|s| serde_json::to_string(&*s)) {
                Some(Ok(json)) => {
                    shared
                        .save(&crate::keys::hex(&id), &json, new.expires_ms - now_ms)
                        .await
                }
                _ => Ok(()),
            };
            if let Err(e) = saved {
                tracing::warn!(error = %e, "dashboard session kept on this instance only: Redis did not take it");
            }
        }
        new
    }

    /// Brings this instance's copy of a session in line with Redis, before the session
    /// is checked: learnt when another instance made it, dropped when it was ended
    /// elsewhere. No-op without Redis; kept as it is while Redis cannot be asked.
    pub async fn refresh(&self, token: &str) {
        let Some(shared) = self.shared.get() else {
            return;
        };
        let id = token_id(token);
        match shared.load(&crate::keys::hex(&id)).await {
            Ok(Some(json)) => match serde_json::from_str::<Session>(&json) {
                Ok(s) => {
                    self.by_token.insert(id, s);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "an unreadable dashboard session in Redis");
                    self.by_token.remove(&id);
                }
            },
            Ok(None) => {
                self.by_token.remove(&id);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read dashboard sessions from Redis; using this instance's")
            }
        }
    }

    /// Ends a session, on every instance when there is Redis.
    pub async fn end(&self, token: &str) {
        self.remove(token);
        if let Some(shared) = self.shared.get() {
            if let Err(e) = shared.delete(&crate::keys::hex(&token_id(token))).await {
                tracing::warn!(error = %e, "a dashboard session could not be ended in Redis");
            }
        }
    }

    /// The session of a cookie token and its CSRF token.
    fn get(&self, token: &str, now_ms: i64) -> Option<Session> {
        let id = token_id(token);
        let s = self.by_token.get(&id)?.value().clone();
        if s.expires_ms <= now_ms {
            self.by_token.remove(&id);
            return None;
        }
        Some(s)
    }
}

/// The session cookie's token, if the request has one.
pub fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (name, value) = c.trim().split_once('=')?;
            (name == SESSION_COOKIE && !value.is_empty()).then_some(value)
        })
}

/// Checks credentials against the configured keys.
pub struct Auth {
    master_key: Option<Secret<String>>,
    /// Dashboard sessions.
    pub sessions: Sessions,
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
        Self {
            master_key,
            sessions: Sessions::default(),
        }
    }

    /// Authenticates a request: by the key it presents, else by its dashboard session
    /// (a mutating method must then carry the session's CSRF token in `x-csrf-token`).
    pub fn authenticate_request(
        &self,
        method: &axum::http::Method,
        headers: &HeaderMap,
        keys: &Keys,
        now_ms: i64,
    ) -> Result<Principal, AuthError> {
        if presented_key(headers).is_some() {
            return self.authenticate(headers, keys, now_ms);
        }
        let Some(token) = session_token(headers) else {
            return self.authenticate(headers, keys, now_ms);
        };
        let session = self.sessions.get(token, now_ms).ok_or(AuthError::Session)?;
        if !method.is_safe() {
            let sent = headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !bool::from(sent.as_bytes().ct_eq(session.csrf.as_bytes())) {
                return Err(AuthError::Csrf);
            }
        }
        self.session_principal(&session, keys, now_ms)
    }

    /// The CSRF token of a valid session.
    pub fn session_csrf(&self, token: &str, now_ms: i64) -> Option<String> {
        self.sessions.get(token, now_ms).map(|s| s.csrf)
    }

    fn session_principal(
        &self,
        s: &Session,
        keys: &Keys,
        now_ms: i64,
    ) -> Result<Principal, AuthError> {
        match &s.subject {
            Subject::Master => Ok(Principal::Master),
            Subject::Open if self.master_key.is_none() => Ok(Principal::Open),
            Subject::Open => Err(AuthError::Session),
            Subject::Key(hash) => {
                let vk = keys.lookup(hash).ok_or(AuthError::Session)?;
                if let Some(at) = vk.row.expires_ms.filter(|&at| at <= now_ms) {
                    return Err(AuthError::Expired(crate::analytics::timefmt::format_ms(at)));
                }
                Ok(Principal::VirtualKey(vk))
            }
        }
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
    fn sessions_stand_for_their_key_and_check_csrf_on_mutations() {
        use axum::http::Method;
        let a = Auth::new(Some(Secret::new("sk-1234".into())));
        let k = Keys::default();
        let s = a.sessions.create(&Principal::Master, 0);
        let cookie = h("cookie", &format!("a=b; {SESSION_COOKIE}={}", s.token));
        assert_eq!(
            a.authenticate_request(&Method::GET, &cookie, &k, 1),
            Ok(Principal::Master)
        );
        assert_eq!(
            a.authenticate_request(&Method::POST, &cookie, &k, 1),
            Err(AuthError::Csrf)
        );
        let mut with_csrf = cookie.clone();
        with_csrf.insert("x-csrf-token", s.csrf.parse().unwrap());
        assert_eq!(
            a.authenticate_request(&Method::DELETE, &with_csrf, &k, 1),
            Ok(Principal::Master)
        );
        assert_eq!(
            a.authenticate_request(&Method::GET, &cookie, &k, SESSION_TTL_MS),
            Err(AuthError::Session)
        );
        let other = h("cookie", &format!("{SESSION_COOKIE}=nope"));
        assert_eq!(
            a.authenticate_request(&Method::GET, &other, &k, 1),
            Err(AuthError::Session)
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
