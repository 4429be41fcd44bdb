//! Retrieval quality on LoCoMo-format data, measured through the HTTP memory API
//! (`memproxy eval-locomo`): every turn is stored as one memory `"Speaker: text"` (a
//! shared photo as `[shares a photo of CAPTION]` after the text, LoCoMo's caption) with
//! its `dia_id` in the metadata (one user per conversation, one memproxy session per
//! LoCoMo session), every question of categories 1-4 is asked through
//! `/v1/memories/search`, and turn-level recall against the questions' evidence is
//! reported with the search latency seen by the client. With `MEMPROXY_EVAL_MISSES=FILE`
//! the questions none of whose evidence is in the top 10 are written to FILE, one per
//! line (category, question, evidence, what was found), for tuning.
//!
//! The data set is not part of this repository (LoCoMo is CC BY-NC 4.0); pass its path.

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The cut-offs recall is reported at.
pub const KS: [usize; 3] = [1, 5, 10];

/// Why an evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot read {path}: {message}")]
    Data { path: String, message: String },
    #[error("memory API call failed: {0}")]
    Http(String),
}

/// One conversation: its turns (dia_id, text, LoCoMo session number) and questions.
pub(crate) struct Conversation {
    id: String,
    pub(crate) turns: Vec<(String, String, u32)>,
    pub(crate) questions: Vec<(String, Vec<String>, usize)>,
}

/// LoCoMo's question categories 1-4, in order.
pub const CATEGORIES: [&str; 4] = ["multi-hop", "temporal", "open-domain", "single-hop"];

/// Normalises evidence ids such as `D:11:26` and splits `D8:6; D9:17`.
fn evidence_ids(raw: &[Value]) -> Vec<String> {
    raw.iter()
        .filter_map(Value::as_str)
        .flat_map(|s| s.split([';', ',', ' ']))
        .filter(|s| !s.is_empty())
        .map(|s| s.replacen("D:", "D", 1))
        .collect()
}

pub(crate) fn parse(path: &str) -> Result<Vec<Conversation>, EvalError> {
    let err = |message: String| EvalError::Data {
        path: path.to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let data: Value = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    let items = data
        .as_array()
        .ok_or_else(|| err("expected a JSON array of conversations".into()))?;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let conv = item
            .get("conversation")
            .and_then(Value::as_object)
            .ok_or_else(|| err(format!("item {i} has no `conversation` object")))?;
        let mut sessions: Vec<u32> = conv
            .keys()
            .filter_map(|k| k.strip_prefix("session_")?.parse().ok())
            .collect();
        sessions.sort_unstable();
        let mut turns = Vec::new();
        for n in sessions {
            for t in conv[&format!("session_{n}")]
                .as_array()
                .into_iter()
                .flatten()
            {
                let (Some(id), Some(speaker), Some(text)) = (
                    t.get("dia_id").and_then(Value::as_str),
                    t.get("speaker").and_then(Value::as_str),
                    t.get("text").and_then(Value::as_str),
                ) else {
                    continue;
                };
                // A shared photo is kept as LoCoMo gives it: its caption.
                let memory = match t.get("blip_caption").and_then(Value::as_str) {
                    Some(caption) => format!("{speaker}: {text} [shares a photo of {caption}]"),
                    None => format!("{speaker}: {text}"),
                };
                turns.push((id.to_string(), memory, n));
            }
        }
        let questions = item
            .get("qa")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|q| matches!(q.get("category").and_then(Value::as_u64), Some(1..=4)))
            .filter_map(|q| {
                let question = q.get("question")?.as_str()?.to_string();
                let ev = evidence_ids(q.get("evidence")?.as_array()?);
                let cat = q.get("category")?.as_u64()? as usize - 1;
                (!ev.is_empty()).then_some((question, ev, cat))
            })
            .collect();
        out.push(Conversation {
            id: item
                .get("sample_id")
                .and_then(Value::as_str)
                .map_or_else(|| format!("conv{i}"), str::to_string),
            turns,
            questions,
        });
    }
    Ok(out)
}

/// The figures of one run.
#[derive(Debug, Default)]
pub struct Report {
    pub conversations: usize,
    pub memories: usize,
    pub questions: usize,
    /// recall_any@k for each of [`KS`].
    pub recall_any: [f64; 3],
    /// recall_all@k for each of [`KS`].
    pub recall_all: [f64; 3],
    /// Per category of [`CATEGORIES`]: questions, recall_any@5, recall_any@10.
    pub by_category: [(usize, f64, f64); 4],
    pub search_p50: Duration,
    pub search_p99: Duration,
    pub ingest_time: Duration,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "conversations {}  memories {}  questions {} (categories 1-4)  ingest {:.1}s",
            self.conversations,
            self.memories,
            self.questions,
            self.ingest_time.as_secs_f64()
        )?;
        for (i, k) in KS.iter().enumerate() {
            writeln!(
                f,
                "recall_any@{k:<2} {:.3}   recall_all@{k:<2} {:.3}",
                self.recall_any[i], self.recall_all[i]
            )?;
        }
        for (name, (n, at5, at10)) in CATEGORIES.iter().zip(&self.by_category) {
            writeln!(
                f,
                "  {name:<12} {n:>3} questions  recall_any@5 {at5:.3}  @10 {at10:.3}"
            )?;
        }
        write!(
            f,
            "search latency p50 {:.2} ms  p99 {:.2} ms",
            self.search_p50.as_secs_f64() * 1000.0,
            self.search_p99.as_secs_f64() * 1000.0
        )
    }
}

/// Where the memory API is.
pub struct Target {
    /// Base URL, e.g. `http://127.0.0.1:8764`.
    pub url: String,
    pub key: Option<String>,
}

struct Api {
    http: reqwest::Client,
    target: Target,
}

impl Api {
    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(
            method,
            format!("{}{path}", self.target.url.trim_end_matches('/')),
        );
        match &self.target.key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    async fn call(&self, rb: reqwest::RequestBuilder) -> Result<Value, EvalError> {
        let resp = rb
            .send()
            .await
            .map_err(|e| EvalError::Http(e.to_string()))?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .map_err(|e| EvalError::Http(e.to_string()))?;
        if !status.is_success() {
            return Err(EvalError::Http(format!("{status}: {body}")));
        }
        Ok(body)
    }
}

/// Percent-encodes a query parameter value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn ingest(api: &Api, user: &str, conv: &Conversation) -> Result<(), EvalError> {
    // In order: neighbouring turns must be neighbouring memories.
    for (dia_id, text, session) in &conv.turns {
        let body = json!({
            "user_id": user,
            "content": text,
            "metadata": {"dia_id": dia_id, "locomo_session": session},
            "session_id": format!("locomo-{}-s{session}", conv.id),
        });
        api.call(api.req(reqwest::Method::POST, "/v1/memories").json(&body))
            .await?;
    }
    Ok(())
}

/// Runs the evaluation of `file` against the memory API at `target`. Users are named
/// `<prefix><sample_id>` and deleted afterwards.
pub async fn run(file: &str, target: Target, prefix: &str) -> Result<Report, EvalError> {
    run_settled(file, target, prefix, std::future::ready(())).await
}

/// [`run`], awaiting `settle` between ingesting and asking: with an embedding model the
/// memory API answers a write before the memory's vector is stored, so an in-process
/// evaluation passes [`memproxy::memory::MemoryService::flush`] here (the time it takes is
/// counted in the ingest time).
pub async fn run_settled(
    file: &str,
    target: Target,
    prefix: &str,
    settle: impl std::future::Future<Output = ()>,
) -> Result<Report, EvalError> {
    let convs = parse(file)?;
    let api = Api {
        http: reqwest::Client::new(),
        target,
    };
    let users: Vec<String> = convs.iter().map(|c| format!("{prefix}{}", c.id)).collect();
    let started = Instant::now();
    // Conversations are ingested concurrently, each in order.
    let results =
        futures_util::future::join_all(convs.iter().zip(&users).map(|(c, u)| ingest(&api, u, c)))
            .await;
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    settle.await;
    let mut report = Report {
        conversations: convs.len(),
        memories: convs.iter().map(|c| c.turns.len()).sum(),
        ingest_time: started.elapsed(),
        ..Default::default()
    };
    let mut latencies = Vec::new();
    let (mut any, mut all) = ([0usize; 3], [0usize; 3]);
    // Tuning aid: the questions none of whose evidence is in the top 10, one per line.
    let mut misses = std::env::var_os("MEMPROXY_EVAL_MISSES")
        .and_then(|p| std::fs::File::create(p).ok())
        .map(std::io::BufWriter::new);
    for (conv, user) in convs.iter().zip(&users) {
        for (question, evidence, cat) in &conv.questions {
            let t = Instant::now();
            let v = api
                .call(api.req(
                    reqwest::Method::GET,
                    &format!(
                        "/v1/memories/search?user_id={}&q={}&limit=10",
                        encode(user),
                        encode(question)
                    ),
                ))
                .await?;
            latencies.push(t.elapsed());
            let found: Vec<&str> = v["results"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["metadata"]["dia_id"].as_str())
                .collect();
            let wanted: HashSet<&str> = evidence.iter().map(String::as_str).collect();
            if let Some(out) = misses.as_mut() {
                if !found.iter().any(|d| wanted.contains(d)) {
                    use std::io::Write as _;
                    let _ = writeln!(out, "{cat}\t{question}\t{evidence:?}\t{found:?}");
                }
            }
            for (i, &k) in KS.iter().enumerate() {
                let hit: HashSet<&str> = found
                    .iter()
                    .take(k)
                    .copied()
                    .filter(|d| wanted.contains(d))
                    .collect();
                any[i] += usize::from(!hit.is_empty());
                let c = &mut report.by_category[*cat];
                match k {
                    5 => c.1 += f64::from(u8::from(!hit.is_empty())),
                    10 => c.2 += f64::from(u8::from(!hit.is_empty())),
                    _ => {}
                }
                all[i] += usize::from(hit.len() == wanted.len());
            }
            report.questions += 1;
            report.by_category[*cat].0 += 1;
        }
    }
    for user in &users {
        let _ = api
            .call(api.req(
                reqwest::Method::DELETE,
                &format!("/v1/memories?user_id={}", encode(user)),
            ))
            .await;
    }
    let n = report.questions.max(1) as f64;
    for i in 0..KS.len() {
        report.recall_any[i] = any[i] as f64 / n;
        report.recall_all[i] = all[i] as f64 / n;
    }
    for c in &mut report.by_category {
        let n = c.0.max(1) as f64;
        (c.1, c.2) = (c.1 / n, c.2 / n);
    }
    latencies.sort_unstable();
    report.search_p50 = percentile(&latencies, 0.5);
    report.search_p99 = percentile(&latencies, 0.99);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_ids_are_normalised() {
        let raw = vec![json!("D1:3"), json!("D:11:26"), json!("D8:6; D9:17")];
        assert_eq!(evidence_ids(&raw), ["D1:3", "D11:26", "D8:6", "D9:17"]);
    }

    #[test]
    fn percentiles() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&d, 0.5), Duration::from_millis(51));
        assert_eq!(percentile(&d, 0.99), Duration::from_millis(99));
    }
}
