//! The upstream HTTP client every provider sends through: hyper-util's pooled client over
//! rustls (ring, the platform's trust store), HTTP/1.1, and HTTP/2 where TLS offers it.
//! A provider parses its endpoint once ([`Endpoint`]), fills a [`HeaderMap`] per request
//! and calls [`HttpClient::post`]; answers come back as hyper responses whose body is read
//! whole ([`read_all`]) or as server-sent events ([`sse_events`]), each event as it arrives.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{
    header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri,
};
use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use http_body_util::{BodyDataStream, BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::{EventStream, ProviderError};
use crate::protocol::ir::SseEvent;

/// An upstream's answer (status and headers read, body not yet).
pub type UpstreamResponse = Response<Incoming>;

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up TLS for upstream connections: {0}")]
pub struct HttpInitError(#[from] std::io::Error);

/// The shared, pooled upstream client (cheap to clone).
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpClient {
    pub fn new() -> Result<Self, HttpInitError> {
        let provider = rustls::crypto::ring::default_provider();
        // Installing twice is harmless: the second call reports the first provider.
        let _ = provider.clone().install_default();
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_platform_verifier(provider)?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            .build(https);
        Ok(Self { client })
    }

    /// POSTs `body` to `endpoint` and waits, at most `timeout`, for the answer's head. An
    /// error status is read and turned into a [`ProviderError`] by `on_status`, the
    /// provider's parser of its error bodies.
    pub async fn post(
        &self,
        endpoint: &Endpoint,
        headers: HeaderMap,
        body: impl Into<Bytes>,
        timeout: Duration,
        on_status: fn(StatusCode, &[u8]) -> ProviderError,
    ) -> Result<UpstreamResponse, ProviderError> {
        self.post_with_headers(endpoint, headers, body, timeout, |status, _, bytes| {
            on_status(status, bytes)
        })
        .await
    }

    /// [`post`](Self::post) for upstreams whose error details travel in headers too (AWS
    /// names its error type in `x-amzn-errortype`): `on_status` also gets the headers.
    pub async fn post_with_headers(
        &self,
        endpoint: &Endpoint,
        headers: HeaderMap,
        body: impl Into<Bytes>,
        timeout: Duration,
        on_status: impl FnOnce(StatusCode, &HeaderMap, &[u8]) -> ProviderError,
    ) -> Result<UpstreamResponse, ProviderError> {
        let mut req = Request::new(Full::new(body.into()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = endpoint.uri.clone();
        *req.headers_mut() = headers;
        let resp = tokio::time::timeout(timeout, self.client.request(req))
            .await
            .map_err(|_| ProviderError::Timeout(timeout))?
            .map_err(|e| transport_error(&endpoint.url, &e))?;
        let status = resp.status();
        if !status.is_success() {
            let head = resp.headers().clone();
            let bytes = read_all(resp, timeout, &endpoint.url)
                .await
                .unwrap_or_default();
            return Err(on_status(status, &head, &bytes));
        }
        Ok(resp)
    }
}

/// An upstream URL, parsed once when the deployment is built.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// As configured, for error messages.
    pub url: Arc<str>,
    uri: Uri,
}

impl Endpoint {
    /// Parses `url`; an unusable URL fails at request time with a clear error (the config
    /// check already validated `api_base`).
    pub fn new(url: String) -> Self {
        let uri = url.parse().unwrap_or_default();
        Self {
            url: url.into(),
            uri,
        }
    }
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_MEMPROXY_USER_ID: HeaderName = HeaderName::from_static("x-memproxy-user-id");

/// Builds the headers of an upstream request: JSON in, `accept` as given, and the request
/// and user ids.
pub fn base_headers(accept: &'static str, request_id: &str, user_id: &str) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(8);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::ACCEPT, HeaderValue::from_static(accept));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(X_REQUEST_ID, v);
    }
    if let Ok(v) = HeaderValue::from_str(user_id) {
        h.insert(X_MEMPROXY_USER_ID, v);
    }
    h
}

/// The `accept` header of a request that wants a stream or not.
pub fn accept(stream: bool) -> &'static str {
    if stream {
        "text/event-stream"
    } else {
        "application/json"
    }
}

/// A transport failure (connect, TLS, reset) with its whole chain of causes.
pub(crate) fn transport_error(url: &str, e: &(dyn std::error::Error + 'static)) -> ProviderError {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        source = s.source();
    }
    ProviderError::Connect {
        upstream: url.to_string(),
        message,
    }
}

/// Reads a whole answer body within `timeout`.
pub(crate) async fn read_all(
    resp: UpstreamResponse,
    timeout: Duration,
    url: &str,
) -> Result<Bytes, ProviderError> {
    tokio::time::timeout(timeout, resp.into_body().collect())
        .await
        .map_err(|_| ProviderError::Timeout(timeout))?
        .map(|c| c.to_bytes())
        .map_err(|e| transport_error(url, &e))
}

/// Turns an SSE response into wire events, each as soon as it arrives; an upstream that
/// stays silent longer than `idle` ends the stream with a timeout.
pub(crate) fn sse_events(resp: UpstreamResponse, idle: Duration, url: &str) -> EventStream {
    let events = BodyDataStream::new(resp.into_body()).eventsource();
    let state = Some((events, url.to_string()));
    Box::pin(futures_util::stream::unfold(
        state,
        move |state| async move {
            let (mut events, url) = state?;
            match tokio::time::timeout(idle, events.next()).await {
                Err(_) => Some((Err(ProviderError::Timeout(idle)), None)),
                Ok(None) => None,
                Ok(Some(Ok(ev))) => {
                    let event = (!ev.event.is_empty() && ev.event != "message").then_some(ev.event);
                    let wire = SseEvent {
                        event,
                        data: Bytes::from(ev.data),
                    };
                    Some((Ok(wire), Some((events, url))))
                }
                Ok(Some(Err(e))) => Some((
                    Err(ProviderError::Connect {
                        upstream: url,
                        message: format!("stream interrupted: {e}"),
                    }),
                    None,
                )),
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_headers_skip_unusable_values() {
        let h = base_headers(accept(true), "req-1", "bad\nid");
        assert_eq!(h["accept"], "text/event-stream");
        assert_eq!(h["x-request-id"], "req-1");
        assert!(h.get("x-memproxy-user-id").is_none());
    }

    #[test]
    fn endpoint_keeps_its_text() {
        let e = Endpoint::new("http://127.0.0.1:9/v1/chat/completions".into());
        assert_eq!(&*e.url, "http://127.0.0.1:9/v1/chat/completions");
        assert_eq!(e.uri.path(), "/v1/chat/completions");
    }
}
