//! Access tokens for Vertex AI: the credentials are exchanged at their token endpoint for
//! an OAuth access token, which is cached and used until shortly before it expires.
//! Refreshes are single-flight: requests that find the token stale while another request
//! is already fetching one wait for that one instead of asking again.

use std::future::Future;
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;

use super::credentials::Credentials;
use crate::providers::http::{read_all, Endpoint, HttpClient};
use crate::providers::ProviderError;

/// A token this close to its expiry is refreshed before use (Google's tokens last an hour).
pub(super) const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// Token lifetime assumed when the endpoint names none.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// The credentials and their current access token.
pub(super) struct TokenSource {
    credentials: Credentials,
    endpoint: Endpoint,
    http: HttpClient,
    timeout: Duration,
    cache: TokenCache,
}

impl TokenSource {
    pub(super) fn new(credentials: Credentials, http: HttpClient, timeout: Duration) -> Self {
        Self {
            endpoint: Endpoint::new(credentials.token_uri().to_string()),
            credentials,
            http,
            timeout,
            cache: TokenCache::default(),
        }
    }

    /// The `Authorization` value of a valid token (cached, or fetched now).
    pub(super) async fn authorization(&self) -> Result<HeaderValue, ProviderError> {
        self.cache.get(Instant::now(), || self.fetch()).await
    }

    /// Forgets `stale` (the upstream refused it), so the next call fetches a new token.
    pub(super) fn invalidate(&self, stale: &HeaderValue) {
        self.cache.invalidate(stale);
    }

    /// Asks the token endpoint for a token; returns it as a header value and its lifetime.
    async fn fetch(&self) -> Result<(HeaderValue, Duration), ProviderError> {
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let form = self
            .credentials
            .token_request(now_unix)
            .map_err(|message| refused(StatusCode::UNAUTHORIZED, message, None))?;
        let mut h = HeaderMap::with_capacity(2);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let principal = self.credentials.principal();
        let resp = self
            .http
            .post(&self.endpoint, h, form, self.timeout, token_error)
            .await
            .map_err(|e| match e {
                ProviderError::Status {
                    status,
                    message,
                    code,
                    ..
                } => refused(
                    status,
                    format!(
                        "Vertex AI: the token endpoint {} refused the credentials of `{principal}`: {message}",
                        self.endpoint.url
                    ),
                    code,
                ),
                other => other,
            })?;
        let body = read_all(resp, self.timeout, &self.endpoint.url).await?;
        let token: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            ProviderError::BadResponse(format!(
                "the token endpoint {} answered without an access token: {e}",
                self.endpoint.url
            ))
        })?;
        let mut value =
            HeaderValue::from_str(&format!("Bearer {}", token.access_token)).map_err(|_| {
                ProviderError::BadResponse(format!(
                    "the token endpoint {} sent an access token that is not a header value",
                    self.endpoint.url
                ))
            })?;
        value.set_sensitive(true);
        let lifetime = token
            .expires_in
            .map_or(DEFAULT_LIFETIME, Duration::from_secs);
        Ok((value, lifetime))
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
}

/// Google's OAuth error body: `{"error": "invalid_grant", "error_description": "…"}`.
#[derive(Deserialize)]
struct TokenErrorBody {
    error: String,
    error_description: Option<String>,
}

/// A token endpoint's error status. Refusals (4xx) become 401 so the client learns its
/// gateway's credentials are at fault; 429 and 5xx keep their status (a retry may help).
fn token_error(status: StatusCode, bytes: &[u8]) -> ProviderError {
    let (message, code) = match serde_json::from_slice::<TokenErrorBody>(bytes) {
        Ok(e) => (
            match e.error_description {
                Some(d) if !d.is_empty() => format!("{}: {d}", e.error),
                _ => e.error.clone(),
            },
            Some(e.error),
        ),
        Err(_) => (
            String::from_utf8_lossy(bytes).chars().take(500).collect(),
            None,
        ),
    };
    let message = format!("{message} (HTTP {})", status.as_u16());
    let status = if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        status
    } else {
        StatusCode::UNAUTHORIZED
    };
    refused(status, message, code)
}

fn refused(status: StatusCode, message: String, code: Option<String>) -> ProviderError {
    ProviderError::Status {
        status,
        message,
        kind: Some("authentication_error".into()),
        code,
    }
}

/// The cached token, and the gate that makes refreshes single-flight.
#[derive(Default)]
pub(super) struct TokenCache {
    current: RwLock<Cached>,
    refresh: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Cached {
    token: Option<(HeaderValue, Instant)>,
    /// Counts fetched tokens: a waiter sees whether a refresh happened while it waited.
    generation: u64,
}

impl TokenCache {
    /// The cached token when it is valid beyond [`REFRESH_MARGIN`] at `now`; otherwise
    /// one fetched by `fetch` (by this call, or by the call already fetching).
    pub(super) async fn get<F, Fut>(
        &self,
        now: Instant,
        fetch: F,
    ) -> Result<HeaderValue, ProviderError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(HeaderValue, Duration), ProviderError>>,
    {
        let seen = {
            let c = self.read();
            match &c.token {
                Some((v, expiry)) if now + REFRESH_MARGIN < *expiry => return Ok(v.clone()),
                _ => c.generation,
            }
        };
        let _gate = self.refresh.lock().await;
        {
            let c = self.read();
            if let Some((v, expiry)) = &c.token {
                // Fetched by the call this one waited for: use it while it is valid at all.
                if c.generation != seen && now < *expiry {
                    return Ok(v.clone());
                }
            }
        }
        let (value, lifetime) = fetch().await?;
        let mut c = self.current.write().unwrap_or_else(|p| p.into_inner());
        c.token = Some((value.clone(), now + lifetime));
        c.generation += 1;
        Ok(value)
    }

    /// Drops the cached token if it is still `stale`.
    pub(super) fn invalidate(&self, stale: &HeaderValue) {
        let mut c = self.current.write().unwrap_or_else(|p| p.into_inner());
        if c.token.as_ref().is_some_and(|(v, _)| v == stale) {
            c.token = None;
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cached> {
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    fn token(n: usize) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer t{n}")).unwrap()
    }

    /// A fetcher that counts its calls and hands out `t1`, `t2`, … valid for `lifetime`.
    fn counting(
        calls: &AtomicUsize,
        lifetime: Duration,
    ) -> impl FnOnce() -> std::future::Ready<Result<(HeaderValue, Duration), ProviderError>> + '_
    {
        move || {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            std::future::ready(Ok((token(n), lifetime)))
        }
    }

    #[tokio::test]
    async fn token_is_reused_until_the_margin_before_expiry() {
        let cache = TokenCache::default();
        let calls = AtomicUsize::new(0);
        let hour = Duration::from_secs(3600);
        let t0 = Instant::now();
        assert_eq!(
            cache.get(t0, counting(&calls, hour)).await.unwrap(),
            token(1)
        );
        let later = t0 + hour - REFRESH_MARGIN - Duration::from_secs(1);
        assert_eq!(
            cache.get(later, counting(&calls, hour)).await.unwrap(),
            token(1)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Within the margin: refreshed, and the new token is then reused.
        let near = t0 + hour - REFRESH_MARGIN + Duration::from_secs(1);
        assert_eq!(
            cache.get(near, counting(&calls, hour)).await.unwrap(),
            token(2)
        );
        assert_eq!(
            cache.get(near, counting(&calls, hour)).await.unwrap(),
            token(2)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn failures_are_not_cached_and_invalidation_forces_a_fetch() {
        let cache = TokenCache::default();
        let t0 = Instant::now();
        let e = cache
            .get(t0, || async {
                Err(ProviderError::BadResponse("token endpoint down".into()))
            })
            .await;
        assert!(e.is_err());
        let calls = AtomicUsize::new(0);
        let hour = Duration::from_secs(3600);
        assert_eq!(
            cache.get(t0, counting(&calls, hour)).await.unwrap(),
            token(1)
        );
        cache.invalidate(&token(7)); // not the cached one: kept
        assert_eq!(
            cache.get(t0, counting(&calls, hour)).await.unwrap(),
            token(1)
        );
        cache.invalidate(&token(1));
        assert_eq!(
            cache.get(t0, counting(&calls, hour)).await.unwrap(),
            token(2)
        );
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_refresh() {
        let cache = Arc::new(TokenCache::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(tokio::sync::Notify::new());
        let t0 = Instant::now();
        // A short-lived token (inside the margin): without single flight every waiter
        // would fetch its own.
        let lifetime = Duration::from_secs(60);
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (cache, calls, release) = (cache.clone(), calls.clone(), release.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get(t0, || async move {
                        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                        release.notified().await;
                        Ok((token(n), lifetime))
                    })
                    .await
            }));
        }
        // Wait until the first fetch is under way, then let it finish.
        while calls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        release.notify_one();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), token(1));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn token_endpoint_refusals_are_authentication_errors() {
        let e = token_error(
            StatusCode::BAD_REQUEST,
            br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
        );
        match e {
            ProviderError::Status {
                status,
                message,
                code,
                ..
            } => {
                assert_eq!(status, StatusCode::UNAUTHORIZED);
                assert_eq!(message, "invalid_grant: Invalid JWT Signature. (HTTP 400)");
                assert_eq!(code.as_deref(), Some("invalid_grant"));
            }
            other => panic!("{other:?}"),
        }
        let e = token_error(StatusCode::SERVICE_UNAVAILABLE, b"busy");
        assert!(e.is_retryable());
    }
}
