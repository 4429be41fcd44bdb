//! The usage databank in `memproxy_requests` (one row per model request, written by the
//! analytics thread in batches: one `INSERT … SELECT FROM unnest(…)` statement per batch,
//! prepared once, whatever the batch's size), feedback, and key spend (added in the same
//! transaction as the rows that cost it).
//!
//! [`AnalyticsStore`] is synchronous and runs on the analytics thread (a std thread): the
//! store drives its one tokio-postgres connection with a small current-thread runtime of
//! its own, so nothing here touches the server's async workers. A broken connection is
//! dropped and made again on the next call; while PostgreSQL is unreachable every call
//! fails with [`StoreError::Unavailable`], which the writer answers by keeping the batch
//! and trying again later.

use std::fmt::Write as _;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use super::{PgError, PgUrl};
use crate::analytics::store::{
    AnalyticsStore, Feedback, GroupBy, Record, RequestsQuery, StoreError, StoredRecord, UsageGroup,
    UsageQuery,
};
use crate::analytics::timefmt;

const RECORD_COLUMNS: &str = "ts_ms, request_id, user_id, key_id, key_alias, endpoint, model, \
    deployment, upstream_model, provider, stream, tokens_in, tokens_out, tokens_cached, \
    tokens_reasoning, cost_usd, total_ms, ttft_ms, upstream_ms, overhead_ms, status, error_type, \
    memories_injected, tool_rounds, attempts, client, project, injected";

/// One statement for any number of rows: each column is one array parameter.
const INSERT: &str = "INSERT INTO memproxy_requests (ts_ms, request_id, user_id, key_id, \
    key_alias, endpoint, model, deployment, upstream_model, provider, stream, tokens_in, \
    tokens_out, tokens_cached, tokens_reasoning, cost_usd, total_ms, ttft_ms, upstream_ms, \
    overhead_ms, status, error_type, memories_injected, tool_rounds, attempts, client, project, \
    injected) \
    SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], \
    $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::bool[], $12::int8[], \
    $13::int8[], $14::int8[], $15::int8[], $16::float8[], $17::float8[], $18::float8[], \
    $19::float8[], $20::float8[], $21::int4[], $22::text[], $23::int4[], $24::int4[], \
    $25::int4[], $26::text[], $27::text[], $28::text[])";

const ADD_SPEND: &str = "UPDATE memproxy_keys k SET spend = k.spend + v.cost \
    FROM unnest($1::text[], $2::float8[]) AS v(hash, cost) WHERE k.hash = v.hash";

/// The PostgreSQL analytics store (see the module docs).
pub struct PgAnalytics {
    rt: tokio::runtime::Runtime,
    url: PgUrl,
    conn: Option<Conn>,
}

struct Conn {
    client: Client,
    insert: Statement,
    add_spend: Statement,
}

fn store_error(e: PgError) -> StoreError {
    super::keys::store_error(e)
}

fn db(e: tokio_postgres::Error) -> StoreError {
    store_error(PgError::Db(e))
}

fn count(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

impl PgAnalytics {
    /// A store for `url`; it connects on first use, on the analytics thread (this may be
    /// called on an async thread, where blocking is not allowed).
    pub fn open(url: &PgUrl) -> Result<Self, StoreError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unavailable(format!("analytics runtime: {e}")))?;
        Ok(Self {
            rt,
            url: url.clone(),
            conn: None,
        })
    }

    /// The connection, made again if it broke.
    fn conn(&mut self) -> Result<&Conn, StoreError> {
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let url = self.url.clone();
            let conn = self.rt.block_on(async move {
                let client = url.connect().await?;
                let insert = client.prepare(INSERT).await?;
                let add_spend = client.prepare(ADD_SPEND).await?;
                Ok::<_, PgError>(Conn {
                    client,
                    insert,
                    add_spend,
                })
            });
            self.conn = Some(conn.map_err(store_error)?);
        }
        self.conn
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("no connection".into()))
    }

    /// Runs `f` with the connection on the store's runtime; a failure that broke the
    /// connection drops it.
    fn run<T>(
        &mut self,
        f: impl for<'c> FnOnce(&'c Conn) -> crate::memory::store::BoxFuture<'c, Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.conn()?;
        let result = match &self.conn {
            Some(c) => self.rt.block_on(f(c)),
            None => Err(StoreError::Unavailable("no connection".into())),
        };
        if matches!(result, Err(StoreError::Unavailable(_))) {
            self.conn = None;
        }
        result
    }
}

/// Column arrays of a batch, in [`INSERT`]'s parameter order.
pub(crate) struct Columns {
    ts: Vec<i64>,
    text: [Vec<Option<String>>; 9],
    stream: Vec<bool>,
    tokens: [Vec<i64>; 4],
    cost: Vec<Option<f64>>,
    total: Vec<f64>,
    ttft: Vec<Option<f64>>,
    upstream: Vec<Option<f64>>,
    overhead: Vec<f64>,
    status: Vec<i32>,
    error_type: Vec<Option<String>>,
    small: [Vec<i32>; 3],
    client: Vec<String>,
    project: Vec<String>,
    injected: Vec<Option<String>>,
}

impl Columns {
    pub(crate) fn of(rows: &[Record]) -> Self {
        let mut c = Columns {
            ts: Vec::with_capacity(rows.len()),
            text: Default::default(),
            stream: vec![],
            tokens: Default::default(),
            cost: vec![],
            total: vec![],
            ttft: vec![],
            upstream: vec![],
            overhead: vec![],
            status: vec![],
            error_type: vec![],
            small: Default::default(),
            client: Vec::with_capacity(rows.len()),
            project: Vec::with_capacity(rows.len()),
            injected: Vec::with_capacity(rows.len()),
        };
        for r in rows {
            c.ts.push(r.ts_ms);
            let texts = [
                Some(r.request_id.clone()),
                Some(r.user_id.clone()),
                r.key_id.clone(),
                r.key_alias.clone(),
                Some(r.endpoint.clone()),
                Some(r.model.clone()),
                r.deployment.clone(),
                r.upstream_model.clone(),
                r.provider.clone(),
            ];
            for (col, v) in c.text.iter_mut().zip(texts) {
                col.push(v);
            }
            c.stream.push(r.stream);
            let tokens = [
                r.tokens_in,
                r.tokens_out,
                r.tokens_cached,
                r.tokens_reasoning,
            ];
            for (col, v) in c.tokens.iter_mut().zip(tokens) {
                col.push(count(v));
            }
            c.cost.push(r.cost_usd);
            c.total.push(r.total_ms);
            c.ttft.push(r.ttft_ms);
            c.upstream.push(r.upstream_ms);
            c.overhead.push(r.overhead_ms);
            c.status.push(i32::from(r.status));
            c.error_type.push(r.error_type.clone());
            let small = [r.memories_injected, r.tool_rounds, r.attempts];
            for (col, v) in c.small.iter_mut().zip(small) {
                col.push(v.min(i32::MAX as u32) as i32);
            }
            c.client.push(r.client.clone());
            c.project.push(r.project.clone());
            c.injected
                .push(crate::analytics::store::injected_to_json(&r.injected));
        }
        c
    }

    pub(crate) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let t = &self.text;
        vec![
            &self.ts,
            &t[0],
            &t[1],
            &t[2],
            &t[3],
            &t[4],
            &t[5],
            &t[6],
            &t[7],
            &t[8],
            &self.stream,
            &self.tokens[0],
            &self.tokens[1],
            &self.tokens[2],
            &self.tokens[3],
            &self.cost,
            &self.total,
            &self.ttft,
            &self.upstream,
            &self.overhead,
            &self.status,
            &self.error_type,
            &self.small[0],
            &self.small[1],
            &self.small[2],
            &self.client,
            &self.project,
            &self.injected,
        ]
    }
}

/// Each key's cost in a batch (keys' hashes and sums, in first-seen order).
fn spend_of(rows: &[Record]) -> (Vec<String>, Vec<f64>) {
    let (mut keys, mut costs): (Vec<String>, Vec<f64>) = (vec![], vec![]);
    for r in rows {
        if let (Some(k), Some(c)) = (&r.key_id, r.cost_usd) {
            match keys.iter().position(|x| x == k) {
                Some(i) => costs[i] += c,
                None => {
                    keys.push(k.clone());
                    costs.push(c);
                }
            }
        }
    }
    (keys, costs)
}

/// Writes rows (and their keys' spend) in one transaction on `client`; the migrate
/// command uses it too.
pub async fn insert_rows(
    client: &mut Client,
    insert: &Statement,
    add_spend: &Statement,
    rows: &[Record],
    spend: bool,
) -> Result<(), tokio_postgres::Error> {
    let fixed: Vec<Record>;
    let rows = if rows
        .iter()
        .any(|r| texts_of(r).iter().any(|t| t.contains('\0')))
    {
        fixed = rows.iter().map(without_nul).collect();
        &fixed
    } else {
        rows
    };
    let tx = client.transaction().await?;
    let cols = Columns::of(rows);
    tx.execute(insert, &cols.params()).await?;
    let (keys, costs) = spend_of(rows);
    if spend && !keys.is_empty() {
        tx.execute(add_spend, &[&keys, &costs]).await?;
    }
    super::rollup::add(&tx, rows).await?;
    tx.commit().await
}

/// A row's free texts (a client's model name, its `x-memproxy-client`, …).
fn texts_of(r: &Record) -> Vec<&str> {
    let mut t = vec![
        r.request_id.as_str(),
        &r.user_id,
        &r.client,
        &r.endpoint,
        &r.model,
        &r.project,
    ];
    t.extend(
        [
            &r.key_id,
            &r.key_alias,
            &r.deployment,
            &r.upstream_model,
            &r.provider,
            &r.error_type,
        ]
        .into_iter()
        .flatten()
        .map(String::as_str),
    );
    t
}

/// `r` with U+FFFD for each NUL of its texts (PostgreSQL cannot store one:
/// [`super::text`]).
fn without_nul(r: &Record) -> Record {
    let mut r = r.clone();
    for s in [
        &mut r.request_id,
        &mut r.user_id,
        &mut r.client,
        &mut r.endpoint,
        &mut r.model,
        &mut r.project,
    ] {
        super::fix_text(s);
    }
    for s in [
        &mut r.key_id,
        &mut r.key_alias,
        &mut r.deployment,
        &mut r.upstream_model,
        &mut r.provider,
        &mut r.error_type,
    ]
    .into_iter()
    .flatten()
    {
        super::fix_text(s);
    }
    r
}

/// The prepared statements [`insert_rows`] takes.
pub async fn prepare_insert(
    client: &Client,
) -> Result<(Statement, Statement), tokio_postgres::Error> {
    Ok((
        client.prepare(INSERT).await?,
        client.prepare(ADD_SPEND).await?,
    ))
}

fn record_from_row(r: &Row, at: usize) -> Record {
    let u = |i: usize| r.get::<_, i64>(at + i).max(0) as u64;
    let small = |i: usize| r.get::<_, i32>(at + i).max(0) as u32;
    Record {
        ts_ms: r.get(at),
        request_id: r.get(at + 1),
        user_id: r.get(at + 2),
        key_id: r.get(at + 3),
        key_alias: r.get(at + 4),
        endpoint: r.get(at + 5),
        model: r.get(at + 6),
        deployment: r.get(at + 7),
        upstream_model: r.get(at + 8),
        provider: r.get(at + 9),
        stream: r.get(at + 10),
        tokens_in: u(11),
        tokens_out: u(12),
        tokens_cached: u(13),
        tokens_reasoning: u(14),
        cost_usd: r.get(at + 15),
        total_ms: r.get(at + 16),
        ttft_ms: r.get(at + 17),
        upstream_ms: r.get(at + 18),
        overhead_ms: r.get(at + 19),
        status: r.get::<_, i32>(at + 20).clamp(0, i32::from(u16::MAX)) as u16,
        error_type: r.get(at + 21),
        memories_injected: small(22),
        tool_rounds: small(23),
        attempts: small(24),
        client: r.get(at + 25),
        project: r.get(at + 26),
        injected: crate::analytics::store::injected_from_json(r.get(at + 27)),
    }
}

/// A parameter of a dynamically built query.
type Param = Box<dyn ToSql + Sync + Send>;

fn refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect()
}

impl AnalyticsStore for PgAnalytics {
    fn insert_records(&mut self, rows: &[Record]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        // The connection is taken out for the transaction (it needs `&mut Client`).
        self.conn()?;
        let Some(mut conn) = self.conn.take() else {
            return Err(StoreError::Unavailable("no connection".into()));
        };
        let result = self.rt.block_on(insert_rows(
            &mut conn.client,
            &conn.insert,
            &conn.add_spend,
            rows,
            true,
        ));
        match result {
            Ok(()) => {
                self.conn = Some(conn);
                Ok(())
            }
            Err(e) => {
                let e = db(e);
                if !matches!(e, StoreError::Unavailable(_)) && !conn.client.is_closed() {
                    self.conn = Some(conn);
                }
                Err(e)
            }
        }
    }

    fn usage(&mut self, q: &UsageQuery) -> Result<Vec<UsageGroup>, StoreError> {
        let group = match q.group_by {
            GroupBy::User => "user_id",
            GroupBy::Model => "model",
            GroupBy::Key => "COALESCE(key_id, '(master)')",
            GroupBy::Client => "client",
            GroupBy::Project => "project",
            GroupBy::Day => "to_char(to_timestamp(ts_ms / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
        };
        let (mut clauses, mut params): (Vec<String>, Vec<Param>) = (vec![], vec![]);
        for (op, v) in [(">=", q.from_ms), ("<", q.to_ms)] {
            if let Some(v) = v {
                params.push(Box::new(v));
                clauses.push(format!("ts_ms {op} ${}", params.len()));
            }
        }
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        // Nearest-rank percentiles, as the embedded store computes them.
        let sql = format!(
            "WITH f AS (SELECT {group} AS g, * FROM memproxy_requests {filter}),
             r AS (SELECT f.*, ROW_NUMBER() OVER (PARTITION BY g ORDER BY total_ms) AS rn,
                          COUNT(*) OVER (PARTITION BY g) AS n FROM f)
             SELECT g, COUNT(*), SUM(tokens_in)::int8, SUM(tokens_out)::int8,
                    COALESCE(SUM(cost_usd), 0)::float8,
                    COUNT(*) FILTER (WHERE status >= 400 OR error_type IS NOT NULL),
                    MAX(CASE WHEN rn = (n * 50 + 99) / 100 THEN total_ms END),
                    MAX(CASE WHEN rn = (n * 95 + 99) / 100 THEN total_ms END),
                    MAX(key_alias)
             FROM r GROUP BY g ORDER BY g COLLATE \"C\""
        );
        let by_key = q.group_by == GroupBy::Key;
        self.run(move |c| {
            Box::pin(async move {
                let rows = c.client.query(&sql, &refs(&params)).await.map_err(db)?;
                Ok(rows
                    .iter()
                    .map(|r| UsageGroup {
                        group: r.get(0),
                        requests: r.get::<_, i64>(1).max(0) as u64,
                        tokens_in: r.get::<_, Option<i64>>(2).unwrap_or(0).max(0) as u64,
                        tokens_out: r.get::<_, Option<i64>>(3).unwrap_or(0).max(0) as u64,
                        cost_usd: r.get(4),
                        errors: r.get::<_, i64>(5).max(0) as u64,
                        latency_p50_ms: r.get::<_, Option<f64>>(6).unwrap_or(0.0),
                        latency_p95_ms: r.get::<_, Option<f64>>(7).unwrap_or(0.0),
                        key_alias: if by_key { r.get(8) } else { None },
                    })
                    .collect())
            })
        })
    }

    fn requests(&mut self, q: &RequestsQuery) -> Result<Vec<StoredRecord>, StoreError> {
        let (mut clauses, mut params): (Vec<String>, Vec<Param>) = (vec![], vec![]);
        for (col, v) in [
            ("user_id", &q.user_id),
            ("model", &q.model),
            ("key_id", &q.key_id),
            ("request_id", &q.request_id),
            ("client", &q.client),
            ("project", &q.project),
        ] {
            if let Some(v) = v {
                params.push(Box::new(v.clone()));
                clauses.push(format!("{col} = ${}", params.len()));
            }
        }
        clauses.extend(q.status.map(|f| f.sql()));
        for (col, op, v) in [
            ("ts_ms", ">=", q.from_ms),
            ("ts_ms", "<", q.to_ms),
            ("id", "<", q.before_id),
        ] {
            if let Some(v) = v {
                params.push(Box::new(v));
                clauses.push(format!("{col} {op} ${}", params.len()));
            }
        }
        let mut sql = format!(
            "SELECT id, feedback_score, feedback_comment, {RECORD_COLUMNS} FROM memproxy_requests"
        );
        if !clauses.is_empty() {
            let _ = write!(sql, " WHERE {}", clauses.join(" AND "));
        }
        params.push(Box::new(q.limit as i64));
        let _ = write!(sql, " ORDER BY id DESC LIMIT ${}", params.len());
        self.run(move |c| {
            Box::pin(async move {
                let rows = c.client.query(&sql, &refs(&params)).await.map_err(db)?;
                Ok(rows
                    .iter()
                    .map(|r| {
                        let record = record_from_row(r, 3);
                        StoredRecord {
                            id: r.get(0),
                            time: timefmt::format_ms(record.ts_ms),
                            feedback_score: r.get(1),
                            feedback_comment: r.get(2),
                            record,
                        }
                    })
                    .collect())
            })
        })
    }

    fn set_feedback(&mut self, fb: &Feedback) -> Result<bool, StoreError> {
        let mut fb = fb.clone();
        super::fix_text(&mut fb.request_id);
        if let Some(c) = &mut fb.comment {
            super::fix_text(c);
        }
        self.run(move |c| {
            Box::pin(async move {
                let n = c
                    .client
                    .execute(
                        "UPDATE memproxy_requests SET feedback_score = $1, feedback_comment = $2,
                             feedback_ts_ms = $3
                         WHERE id = (SELECT id FROM memproxy_requests WHERE request_id = $4
                             AND ($5::text IS NULL OR key_id = $5) ORDER BY id DESC LIMIT 1)",
                        &[
                            &fb.score,
                            &fb.comment,
                            &timefmt::now_ms(),
                            &fb.request_id,
                            &fb.key_id,
                        ],
                    )
                    .await
                    .map_err(db)?;
                Ok(n > 0)
            })
        })
    }

    fn timeseries(
        &mut self,
        q: &crate::analytics::rollup::TimeseriesQuery,
    ) -> Result<crate::analytics::rollup::Timeseries, StoreError> {
        let q = q.clone();
        self.run(move |c| {
            Box::pin(async move { super::rollup::timeseries(&c.client, &q).await.map_err(db) })
        })
    }

    fn check(&mut self) -> Result<(), StoreError> {
        self.run(|c| {
            Box::pin(async move {
                c.client.simple_query("SELECT 1").await.map_err(db)?;
                Ok(())
            })
        })
    }
}
