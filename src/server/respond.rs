//! Answers go back to the client in the client's wire format: passed through when the
//! provider spoke the same format, translated through the IR otherwise. Streams are
//! relayed event by event as they arrive; what they carried is collected for the
//! completion hook (logs now; memory capture and analytics hook in here).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;

use super::drain::Drain;
use super::error::ApiError;
use crate::protocol::ir::{Collector, Completion, ErrorInfo, Format, SseEvent, StreamEvent};
use crate::protocol::responses::{self, ResponseMeta};
use crate::protocol::{self, ir};
use crate::providers::{EventStream, ProviderError, Reply};
use crate::routing::{Deployment, RouteError};

/// What the client speaks and expects.
pub struct ClientSpec {
    pub format: Format,
    /// The model name the client asked for.
    pub model: String,
    /// OpenAI clients: whether they asked for the final usage chunk.
    pub include_usage: bool,
    pub request_id: String,
    pub started: Instant,
    /// Responses clients: the response being answered (id, echoed request fields).
    pub responses: Option<Arc<ResponseMeta>>,
    /// Sees the answer once it is complete, before the client has read its end (so a
    /// follow-up request finds what it stored).
    pub observer: Option<Observer>,
    /// The completion hook reads the answer's content (memory capture); otherwise an
    /// answer passed through is read only for its id, model and usage.
    pub keep_content: bool,
    /// Ends the stream with an error event once the shutdown grace period is over.
    pub drain: Drain,
}

/// See [`ClientSpec::observer`]; gets the deployment that answered.
pub type Observer = Box<dyn FnOnce(&Exchange, &Deployment) + Send>;

/// The wire format the upstream answered in, set on every answer's response (a
/// handler can tell a native answer from a translated one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnsweredIn(pub Format);

impl ClientSpec {
    fn encode(&self, c: &Completion) -> Bytes {
        match &self.responses {
            Some(meta) => responses::encode_response(meta, c),
            None => protocol::encode_completion(self.format, c),
        }
    }

    fn encoder(&self, include_usage: bool) -> Box<dyn ir::StreamEncoder> {
        match &self.responses {
            Some(meta) => Box::new(responses::EventEncoder::new(meta.clone())),
            None => protocol::encoder_for(self.format, &self.model, include_usage),
        }
    }
}

/// What an answered request produced, handed to the completion hook.
#[derive(Debug)]
pub struct Exchange {
    pub completion: Completion,
    /// The answer arrived whole (a stream reached its end marker).
    pub completed: bool,
    pub ttft: Option<Duration>,
    /// Streams: time spent waiting for the provider's events (after the headers).
    pub upstream_wait: Duration,
    /// Streams: time spent waiting for the client to take the frames.
    pub client_wait: Duration,
    /// Streams: the error kind that ended the stream, if one did.
    pub error: Option<&'static str>,
    /// The wire format the upstream answered in.
    pub upstream: Format,
    /// Rounds of memory tool calls memproxy ran before this answer (0 without the tool
    /// loop); set by the pipeline, which also puts it in the analytics row.
    pub tool_rounds: u32,
}

/// The token usage of a complete (non-streamed) answer, on its response for the pipeline.
#[derive(Debug, Clone, Copy)]
pub struct AnswerUsage(pub ir::Usage);

/// Called once when the answer is complete (or the client went away).
pub type OnDone = Box<dyn FnOnce(Exchange) + Send>;

/// Builds the client's response from a provider reply made by `deployment`.
pub fn respond(
    reply: Reply,
    mut client: ClientSpec,
    deployment: Arc<Deployment>,
    on_done: OnDone,
) -> Result<Response, ApiError> {
    match reply {
        Reply::Complete { body, format } => {
            let (body, completion) = if format == client.format {
                let decoded = if client.keep_content || client.observer.is_some() {
                    protocol::decode_completion(format, &body)
                } else {
                    protocol::decode_meta(format, &body)
                };
                let completion = match decoded {
                    Ok(c) => c,
                    // Not JSON at all (a proxy's HTML page, a truncated body): no client
                    // could read it either.
                    Err(e) if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() => {
                        return Err(ApiError::from(RouteError::Provider(
                            ProviderError::BadResponse(format!("the answer is not JSON ({})", e.0)),
                        )));
                    }
                    // JSON of a shape memproxy does not know: the client's business.
                    Err(e) => {
                        tracing::warn!(request_id = %client.request_id, error = %e, "could not read the upstream answer");
                        Completion::default()
                    }
                };
                (body, completion)
            } else {
                let completion = protocol::decode_completion(format, &body).map_err(|e| {
                    ApiError::from(RouteError::Provider(ProviderError::BadResponse(e.0)))
                })?;
                (client.encode(&completion), completion)
            };
            let usage = completion.usage;
            let ex = Exchange {
                completion,
                completed: true,
                ttft: None,
                upstream_wait: Duration::ZERO,
                client_wait: Duration::ZERO,
                error: None,
                upstream: format,
                tool_rounds: 0,
            };
            if let Some(observe) = client.observer.take() {
                observe(&ex, &deployment);
            }
            on_done(ex);
            let mut resp = (StatusCode::OK, body).into_response();
            resp.extensions_mut().insert(AnswerUsage(usage));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp.extensions_mut().insert(AnsweredIn(format));
            Ok(resp)
        }
        Reply::Stream {
            events,
            format,
            usage_added,
        } => {
            let mut resp = sse_response(relay(
                events,
                format,
                usage_added,
                client,
                deployment,
                on_done,
            ));
            resp.extensions_mut().insert(AnsweredIn(format));
            Ok(resp)
        }
    }
}

/// An SSE response around an already framed byte stream.
pub fn sse_response<S>(stream: S) -> Response
where
    S: futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
{
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// Collects what a stream carried and reports it when dropped (end or disconnect).
struct Tracker {
    collector: Collector,
    complete: bool,
    first_event: Option<Instant>,
    client: ClientSpec,
    on_done: Option<OnDone>,
    upstream_wait: Duration,
    client_wait: Duration,
    /// When the last frame was handed out (the client's turn began).
    yielded_at: Option<Instant>,
    error: Option<&'static str>,
    upstream: Format,
    deployment: Arc<Deployment>,
}

impl Tracker {
    /// The answer is complete: show it to the client's observer, if any.
    fn observe(&mut self) {
        if let Some(observe) = self.client.observer.take() {
            let ex = Exchange {
                completion: self.collector.completion.clone(),
                completed: true,
                ttft: self.first_event.map(|t| t - self.client.started),
                upstream_wait: self.upstream_wait,
                client_wait: self.client_wait,
                error: None,
                upstream: self.upstream,
                tool_rounds: 0,
            };
            observe(&ex, &self.deployment);
        }
    }
}

impl Tracker {
    /// Reports the exchange once: as soon as the stream completed (before its last
    /// frames reach the client, so whoever reads the whole answer can rely on the report
    /// having been made), or when the stream is dropped unfinished.
    fn report(&mut self) {
        let Some(cb) = self.on_done.take() else {
            return;
        };
        let ttft = self.first_event.map(|t| t - self.client.started);
        let usage = self.collector.completion.usage;
        tracing::info!(
            target: "memproxy::stream",
            request_id = %self.client.request_id,
            model = %self.client.model,
            completed = self.complete,
            ttft_ms = ttft.map(|d| d.as_secs_f64() * 1000.0),
            duration_ms = self.client.started.elapsed().as_secs_f64() * 1000.0,
            input_tokens = usage.input_tokens,
            output_tokens = usage.output_tokens,
            "stream ended"
        );
        cb(Exchange {
            completion: std::mem::take(&mut self.collector.completion),
            completed: self.complete,
            ttft,
            upstream_wait: self.upstream_wait,
            client_wait: self.client_wait,
            error: self.error,
            upstream: self.upstream,
            tool_rounds: 0,
        });
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.report();
    }
}

struct RelayState {
    events: EventStream,
    decoder: Box<dyn ir::StreamDecoder>,
    /// `None`: same format on both sides, wire events pass through untouched.
    encoder: Option<Box<dyn ir::StreamEncoder>>,
    /// Used only to report a failure in the client's format during passthrough.
    error_encoder: Box<dyn ir::StreamEncoder>,
    hide_usage_chunk: bool,
    pending: VecDeque<Bytes>,
    finished: bool,
    tracker: Tracker,
    irs: Vec<StreamEvent>,
    wire: Vec<SseEvent>,
}

fn error_info(e: ProviderError) -> (ErrorInfo, &'static str) {
    let e = ApiError::from(RouteError::Provider(e));
    (e.info(), e.label())
}

impl RelayState {
    /// Handles one upstream wire event, queueing the frames for the client.
    fn on_event(&mut self, ev: SseEvent) {
        self.irs.clear();
        let complete = match self.decoder.decode(&ev, &mut self.irs) {
            Ok(c) => c,
            // Not JSON at all (a truncated or garbled event): the stream is broken, and
            // passing it on would break the client's parser; end it with an error event.
            Err(e)
                if !ev.data.trim_ascii().is_empty()
                    && serde_json::from_slice::<serde::de::IgnoredAny>(&ev.data).is_err() =>
            {
                tracing::warn!(request_id = %self.tracker.client.request_id, error = %e, "malformed stream event; the stream is ended");
                let bad = ProviderError::BadResponse(format!(
                    "an event of the stream is not JSON ({})",
                    e.0
                ));
                self.on_failure(error_info(bad));
                return;
            }
            Err(e) => {
                tracing::warn!(request_id = %self.tracker.client.request_id, error = %e, "undecodable stream event");
                false
            }
        };
        for ir in &self.irs {
            if self.tracker.first_event.is_none() && !matches!(ir, StreamEvent::Start { .. }) {
                self.tracker.first_event = Some(Instant::now());
            }
            self.tracker.collector.push(ir);
        }
        match &mut self.encoder {
            None => {
                let usage_only = !self.irs.is_empty()
                    && self.irs.iter().all(|e| matches!(e, StreamEvent::Usage(_)));
                if !(self.hide_usage_chunk && usage_only) {
                    self.pending.push_back(ev.to_frame());
                    self.error_encoder.opened_upstream();
                }
            }
            Some(enc) => {
                self.wire.clear();
                for ir in &self.irs {
                    enc.encode(ir, &mut self.wire);
                }
                if complete {
                    enc.finish(&mut self.wire);
                }
                self.pending
                    .extend(self.wire.iter().map(SseEvent::to_frame));
            }
        }
        if complete {
            self.tracker.complete = true;
            self.tracker.observe();
            self.tracker.report();
            self.finished = true;
        }
    }

    /// The upstream closed a stream whose format ends that way (Gemini): finish it.
    fn on_close(&mut self) {
        if let Some(enc) = &mut self.encoder {
            self.wire.clear();
            enc.finish(&mut self.wire);
            self.pending
                .extend(self.wire.iter().map(SseEvent::to_frame));
        }
        self.tracker.complete = true;
        self.tracker.observe();
        self.tracker.report();
        self.finished = true;
    }

    fn on_failure(&mut self, (err, label): (ErrorInfo, &'static str)) {
        self.tracker.error = Some(label);
        self.wire.clear();
        match &mut self.encoder {
            Some(enc) => enc.fail(&err, &mut self.wire),
            None => self.error_encoder.fail(&err, &mut self.wire),
        }
        self.pending
            .extend(self.wire.iter().map(SseEvent::to_frame));
        self.finished = true;
    }
}

fn relay(
    events: EventStream,
    format: Format,
    usage_added: bool,
    client: ClientSpec,
    deployment: Arc<Deployment>,
    on_done: OnDone,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send {
    let passthrough = format == client.format;
    let state = RelayState {
        events,
        decoder: protocol::decoder_for(format),
        encoder: (!passthrough).then(|| client.encoder(client.include_usage)),
        error_encoder: client.encoder(false),
        hide_usage_chunk: passthrough && usage_added && format == Format::OpenAiChat,
        pending: VecDeque::new(),
        finished: false,
        tracker: Tracker {
            collector: Collector::default(),
            complete: false,
            first_event: None,
            client,
            on_done: Some(on_done),
            upstream_wait: Duration::ZERO,
            client_wait: Duration::ZERO,
            yielded_at: None,
            error: None,
            upstream: format,
            deployment,
        },
        irs: Vec::new(),
        wire: Vec::new(),
    };
    futures_util::stream::unfold(state, |mut st| async move {
        if let Some(t) = st.tracker.yielded_at.take() {
            st.tracker.client_wait += t.elapsed();
        }
        loop {
            if let Some(frame) = st.pending.pop_front() {
                st.tracker.yielded_at = Some(Instant::now());
                return Some((Ok(frame), st));
            }
            if st.finished {
                return None;
            }
            let waiting = Instant::now();
            let next = tokio::select! {
                biased;
                () = st.tracker.client.drain.stopped() => {
                    tracing::warn!(request_id = %st.tracker.client.request_id, "stream ended by shutdown");
                    let e = ApiError::ShuttingDown;
                    st.on_failure((e.info(), e.label()));
                    continue;
                }
                next = st.events.next() => next,
            };
            st.tracker.upstream_wait += waiting.elapsed();
            match next {
                Some(Ok(ev)) => st.on_event(ev),
                Some(Err(e)) => {
                    tracing::warn!(request_id = %st.tracker.client.request_id, error = %e, "upstream stream failed");
                    st.on_failure(error_info(e));
                }
                None if st.decoder.ends_at_close() => st.on_close(),
                None => st.on_failure(error_info(ProviderError::BadResponse(
                    "upstream closed the stream before it was complete".into(),
                ))),
            }
        }
    })
}
