//! The edge interceptor (`memproxy intercept`, SPEC §5): a small local proxy per project
//! that forwards every request, unchanged and unbuffered (streams included), to a central
//! memproxy, adding the project (`x-memory-project`) and the user's identity
//! (`x-memory-user-id`, and a key when the client sends none). IDEs whose only setting is
//! a base URL then get one memory per project. Each project has a stable port from the
//! [`registry`]; the project id comes from the directory ([`project`]).
//!
//! # Layout
//! - [`project`]: the project id of a directory (git remote, else folder name).
//! - [`registry`]: the port registry file and its lock.

pub mod project;
pub mod registry;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::identity::{validate_project, validate_user_id, PROJECT_HEADER};
use registry::{Entry, Registry, RegistryError};

/// What to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// The project id (validated).
    pub project: String,
    /// The directory it was derived from, recorded in the registry.
    pub dir: Option<PathBuf>,
    /// The central memproxy's root URL (`http://host:8764`; a trailing `/v1` is dropped).
    pub upstream: String,
    /// Sent as `x-memory-user-id` when the client sends none.
    pub user: Option<String>,
    /// Sent as `Authorization: Bearer` when the client sends no key.
    pub key: Option<String>,
    /// Address to listen on (loopback by default).
    pub host: String,
    pub registry: Registry,
}

/// Why the interceptor could not start.
#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("invalid project: {0}")]
    Project(String),
    #[error("invalid user id: {0}")]
    User(String),
    #[error("the upstream `{0}` is not an http(s) URL")]
    Upstream(String),
    #[error(
        "an interceptor for project `{project}` already runs (pid {pid}) on port {port}: \
         use http://127.0.0.1:{port}"
    )]
    AlreadyRunning {
        project: String,
        port: u16,
        pid: u32,
    },
    #[error(
        "port {port} of project `{project}` is in use by another program ({err}); stop it, \
         or `memproxy intercept release {project}` to get a new port"
    )]
    PortBusy {
        project: String,
        port: u16,
        err: std::io::Error,
    },
    #[error("cannot set up TLS for the upstream: {0}")]
    Tls(std::io::Error),
}

/// A running interceptor.
pub struct Running {
    pub project: String,
    pub addr: SocketAddr,
    registry: Registry,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

impl Running {
    /// The base URLs to paste into clients.
    pub fn instructions(&self) -> String {
        let base = format!("http://{}", self.addr);
        format!(
            "memproxy intercept: project `{p}` -> {base}\n\n\
             PyCharm AI Assistant (OpenAI-compatible / custom provider URL): {base}/v1\n\
             Claude Code:  export ANTHROPIC_BASE_URL={base}\n\
             Codex CLI (~/.codex/config.toml, [model_providers.memproxy]): base_url = \"{base}/v1\"\n\
             OpenAI / Anthropic SDKs: base_url = \"{base}/v1\" / \"{base}\"\n",
            p = self.project
        )
    }

    /// Stops serving (in-flight requests finish) and marks the port free of a process.
    pub async fn stop(mut self) -> std::io::Result<()> {
        let _ = self.stop.take().map(|s| s.send(()));
        let served = match self.handle.take() {
            Some(h) => h.await.unwrap_or_else(|e| Err(std::io::Error::other(e))),
            None => Ok(()),
        };
        let _ = self.registry.stopped(&self.project, std::process::id());
        served
    }

    /// Serves until `shutdown` resolves, then stops.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        shutdown.await;
        self.stop().await
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(h) = &self.handle {
            h.abort();
            let _ = self.registry.stopped(&self.project, std::process::id());
        }
    }
}

/// The forwarder's state.
struct Forwarder {
    client: Client<HttpsConnector<HttpConnector>, Body>,
    /// Upstream root without a trailing slash.
    base: String,
    project: HeaderValue,
    user: Option<HeaderValue>,
    key: Option<HeaderValue>,
}

/// The upstream's root: no trailing `/` or `/v1`.
pub fn upstream_root(url: &str) -> Result<String, InterceptError> {
    let root = url.trim().trim_end_matches('/');
    let root = root
        .strip_suffix("/v1")
        .unwrap_or(root)
        .trim_end_matches('/');
    let ok = (root.starts_with("http://") || root.starts_with("https://"))
        && root.parse::<Uri>().is_ok();
    if ok {
        Ok(root.to_string())
    } else {
        Err(InterceptError::Upstream(url.to_string()))
    }
}

/// Starts the interceptor of `opts.project` on its registered port (a new one for a new
/// project), recording this process in the registry.
pub async fn start(opts: Options) -> Result<Running, InterceptError> {
    validate_project(&opts.project).map_err(|e| InterceptError::Project(e.to_string()))?;
    if let Some(u) = &opts.user {
        validate_user_id(u).map_err(|e| InterceptError::User(e.to_string()))?;
    }
    let base = upstream_root(&opts.upstream)?;
    let forwarder = Forwarder {
        client: client()?,
        base: base.clone(),
        project: HeaderValue::from_str(&opts.project)
            .map_err(|e| InterceptError::Project(e.to_string()))?,
        user: opts
            .user
            .as_deref()
            .and_then(|u| HeaderValue::from_str(u).ok()),
        key: opts
            .key
            .as_deref()
            .and_then(|k| HeaderValue::from_str(&format!("Bearer {k}")).ok()),
    };
    let listener = {
        let mut reg = opts.registry.lock()?;
        if let Some(e) = reg.entries.get(&opts.project) {
            if let Some(pid) = e.pid.filter(|_| e.running()) {
                return Err(InterceptError::AlreadyRunning {
                    project: opts.project,
                    port: e.port,
                    pid,
                });
            }
        }
        let host = opts.host.as_str();
        let bind = |p: u16| {
            let l = std::net::TcpListener::bind((host, p))?;
            l.set_nonblocking(true)?;
            Ok::<_, std::io::Error>(l)
        };
        // Bound before the lock is released, so a concurrent start neither picks nor takes
        // this port.
        let (port, std_listener) = match reg.entries.get(&opts.project) {
            Some(e) => (
                e.port,
                bind(e.port).map_err(|err| InterceptError::PortBusy {
                    project: opts.project.clone(),
                    port: e.port,
                    err,
                })?,
            ),
            None => reg.new_port(|p| bind(p).ok())?,
        };
        let listener =
            TcpListener::from_std(std_listener).map_err(|err| InterceptError::PortBusy {
                project: opts.project.clone(),
                port,
                err,
            })?;
        reg.entries.insert(
            opts.project.clone(),
            Entry {
                port,
                pid: Some(std::process::id()),
                upstream: base,
                dir: opts.dir.as_ref().map(|d| d.display().to_string()),
            },
        );
        reg.save()?;
        listener
    };
    let addr = listener.local_addr().map_err(|err| {
        InterceptError::Registry(RegistryError::Io {
            path: "listener".into(),
            err,
        })
    })?;
    let app = Router::new()
        .fallback(forward)
        .with_state(Arc::new(forwarder));
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
    });
    tracing::info!(project = %opts.project, address = %addr, "interceptor listening");
    Ok(Running {
        project: opts.project,
        addr,
        registry: opts.registry,
        stop: Some(tx),
        handle: Some(handle),
    })
}

fn client() -> Result<Client<HttpsConnector<HttpConnector>, Body>, InterceptError> {
    let provider = rustls::crypto::ring::default_provider();
    let _ = provider.clone().install_default();
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_platform_verifier(provider)
        .map_err(InterceptError::Tls)?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_timer(TokioTimer::new())
        .build(https))
}

/// Headers that belong to one connection, not to the request.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Forwards one request to the upstream, its body and the answer's streamed through.
async fn forward(State(f): State<Arc<Forwarder>>, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri: Uri = match format!("{}{path}", f.base).parse() {
        Ok(u) => u,
        Err(e) => return failure(StatusCode::BAD_REQUEST, &format!("bad request URI: {e}")),
    };
    parts.uri = uri;
    parts.version = axum::http::Version::HTTP_11;
    let h = &mut parts.headers;
    for name in &HOP_BY_HOP {
        h.remove(name);
    }
    h.remove(header::HOST);
    h.insert(HeaderName::from_static(PROJECT_HEADER), f.project.clone());
    if let Some(u) = &f.user {
        if !h.contains_key("x-memory-user-id") {
            h.insert(HeaderName::from_static("x-memory-user-id"), u.clone());
        }
    }
    if let Some(k) = &f.key {
        if !h.contains_key(header::AUTHORIZATION) && !h.contains_key("x-api-key") {
            h.insert(header::AUTHORIZATION, k.clone());
        }
    }
    match f.client.request(Request::from_parts(parts, body)).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            for name in &HOP_BY_HOP {
                parts.headers.remove(name);
            }
            Response::from_parts(parts, Body::new(body))
        }
        Err(e) => {
            tracing::warn!(upstream = %f.base, error = %e, "upstream unreachable");
            failure(
                StatusCode::BAD_GATEWAY,
                &format!(
                    "memproxy intercept: the memproxy at {} is unreachable ({e}); is it running?",
                    f.base
                ),
            )
        }
    }
}

/// An error both OpenAI and Anthropic clients read (`error.message`).
fn failure(status: StatusCode, message: &str) -> Response {
    let body = json!({
        "type": "error",
        "error": {"type": "api_error", "code": "upstream_unreachable", "message": message},
    });
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_roots() {
        assert_eq!(upstream_root("http://h:8764/").unwrap(), "http://h:8764");
        assert_eq!(upstream_root("http://h:8764/v1").unwrap(), "http://h:8764");
        assert_eq!(
            upstream_root("https://h/base/v1/").unwrap(),
            "https://h/base"
        );
        assert!(upstream_root("h:8764").is_err());
    }
}
