use std::sync::{Arc, Mutex};

use super::*;

/// A store keeping rows in memory, or failing every write.
struct MemStore {
    rows: Arc<Mutex<Vec<Record>>>,
    batches: Arc<Mutex<Vec<usize>>>,
    fail: bool,
}

impl AnalyticsStore for MemStore {
    fn insert_records(&mut self, rows: &[Record]) -> Result<(), StoreError> {
        if self.fail {
            return Err(StoreError::Database("disk I/O error".into()));
        }
        self.batches.lock().unwrap().push(rows.len());
        self.rows.lock().unwrap().extend_from_slice(rows);
        Ok(())
    }
    fn usage(&mut self, _: &UsageQuery) -> Result<Vec<UsageGroup>, StoreError> {
        Ok(vec![])
    }
    fn requests(&mut self, _: &RequestsQuery) -> Result<Vec<StoredRecord>, StoreError> {
        Ok(vec![])
    }
    fn set_feedback(&mut self, fb: &Feedback) -> Result<bool, StoreError> {
        Ok(self
            .rows
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.request_id == fb.request_id))
    }
    fn check(&mut self) -> Result<(), StoreError> {
        if self.fail {
            Err(StoreError::Database("disk I/O error".into()))
        } else {
            Ok(())
        }
    }
}

fn settings(queue_size: usize, batch_size: usize) -> AnalyticsSettings {
    AnalyticsSettings {
        enabled: true,
        data_dir: "/nonexistent".into(),
        queue_size,
        batch_size,
        flush_interval: std::time::Duration::from_millis(5),
    }
}

type Rows = Arc<Mutex<Vec<Record>>>;

fn mem(queue: usize, batch: usize, fail: bool) -> (Analytics, Rows, Arc<Mutex<Vec<usize>>>) {
    let rows: Rows = Arc::default();
    let batches: Arc<Mutex<Vec<usize>>> = Arc::default();
    let (r, b) = (rows.clone(), batches.clone());
    let opener: Opener = Box::new(move || {
        Ok(Box::new(MemStore {
            rows: r.clone(),
            batches: b.clone(),
            fail,
        }) as Box<dyn AnalyticsStore>)
    });
    let (a, ()) = Analytics::with_opener(&settings(queue, batch), opener, |_| Ok(()));
    (a, rows, batches)
}

fn rec(i: usize) -> Record {
    Record {
        request_id: format!("r{i}"),
        ..Default::default()
    }
}

#[tokio::test]
async fn rows_are_written_in_batches_and_flush_waits_for_them() {
    let (a, rows, batches) = mem(1000, 64, false);
    for i in 0..200 {
        a.record(rec(i));
    }
    a.flush().await;
    assert_eq!(rows.lock().unwrap().len(), 200);
    assert!(batches.lock().unwrap().iter().all(|&n| n <= 64));
    let s = a.stats();
    assert_eq!(
        (s.written, s.queue_depth, s.dropped_queue_full),
        (200, 0, 0)
    );
    // A query sees every row queued before it.
    a.record(rec(999));
    assert!(a
        .call(|s| s.set_feedback(&Feedback {
            request_id: "r999".into(),
            score: None,
            comment: None,
            key_id: None,
        }))
        .await
        .unwrap());
    a.shutdown().await;
}

#[tokio::test]
async fn a_full_queue_counts_what_it_drops() {
    let (a, rows, _) = mem(2, 64, false);
    // Hold the store thread inside a job so queued rows stay queued.
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    // One poll sends the job; its answer is not needed.
    let sent = futures_util::FutureExt::now_or_never(a.call(move |_| {
        let _ = release_rx.recv();
        Ok(())
    }));
    assert!(sent.is_none());
    for i in 0..5 {
        a.record(rec(i));
    }
    let s = a.stats();
    assert_eq!((s.queue_depth, s.dropped_queue_full), (2, 3));
    release_tx.send(()).unwrap();
    a.flush().await;
    assert_eq!(rows.lock().unwrap().len(), 2);
    assert_eq!(a.stats().written, 2);
}

#[tokio::test]
async fn a_failing_store_loses_rows_loudly_not_silently() {
    let (a, rows, _) = mem(100, 10, true);
    for i in 0..25 {
        a.record(rec(i));
    }
    a.flush().await;
    let s = a.stats();
    assert_eq!((s.written, s.dropped_store_error), (0, 25));
    assert!(!s.store_ok);
    assert!(rows.lock().unwrap().is_empty());
    assert!(a.call(|s| s.check()).await.is_err());
}

#[tokio::test]
async fn an_unopenable_store_serves_and_keeps_rows_within_the_bound() {
    let opener: Opener = Box::new(|| Err(StoreError::Unavailable("read-only".into())));
    let (a, ()) = Analytics::with_opener(&settings(3, 10), opener, |_| Ok(()));
    for i in 0..5 {
        a.record(rec(i));
    }
    a.flush().await;
    let s = a.stats();
    // Kept for a later write, counted against the queue's bound; the rest dropped.
    assert_eq!(
        (s.queue_depth, s.dropped_queue_full, s.dropped_store_error),
        (3, 2, 0)
    );
    assert!(!s.store_ok);
    let err = a.call(|s| s.check()).await.unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
}

/// Unreachable for its first `outages` writes, then a [`MemStore`].
struct Flaky {
    outages: usize,
    inner: MemStore,
}

impl AnalyticsStore for Flaky {
    fn insert_records(&mut self, rows: &[Record]) -> Result<(), StoreError> {
        if self.outages > 0 {
            self.outages -= 1;
            return Err(StoreError::Unavailable("connection refused".into()));
        }
        self.inner.insert_records(rows)
    }
    fn usage(&mut self, q: &UsageQuery) -> Result<Vec<UsageGroup>, StoreError> {
        self.inner.usage(q)
    }
    fn requests(&mut self, q: &RequestsQuery) -> Result<Vec<StoredRecord>, StoreError> {
        self.inner.requests(q)
    }
    fn set_feedback(&mut self, fb: &Feedback) -> Result<bool, StoreError> {
        self.inner.set_feedback(fb)
    }
    fn check(&mut self) -> Result<(), StoreError> {
        self.inner.check()
    }
}

#[tokio::test]
async fn rows_an_unreachable_store_refused_are_written_when_it_returns() {
    let rows: Rows = Arc::default();
    let r = rows.clone();
    let opener: Opener = Box::new(move || {
        Ok(Box::new(Flaky {
            outages: 3,
            inner: MemStore {
                rows: r.clone(),
                batches: Arc::default(),
                fail: false,
            },
        }) as Box<dyn AnalyticsStore>)
    });
    let (a, ()) = Analytics::with_opener(&settings(100, 10), opener, |_| Ok(()));
    for i in 0..25 {
        a.record(rec(i));
    }
    // Each flush makes one attempt: three outages, then the rows land.
    for _ in 0..4 {
        a.flush().await;
    }
    let s = a.stats();
    assert_eq!(
        (s.written, s.queue_depth, s.dropped_store_error),
        (25, 0, 0)
    );
    assert!(s.store_ok);
    let got: Vec<String> = rows
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.request_id.clone())
        .collect();
    assert_eq!(
        got,
        (0..25).map(|i| format!("r{i}")).collect::<Vec<_>>(),
        "all, in order"
    );
    a.shutdown().await;
}

#[tokio::test]
async fn disabled_records_nothing() {
    let mut s = settings(10, 10);
    s.enabled = false;
    let (a, ()) = Analytics::with_opener(
        &s,
        Box::new(|| Err(StoreError::Unavailable("x".into()))),
        |_| Ok(()),
    );
    a.record(rec(1));
    a.flush().await;
    assert_eq!(a.stats().dropped_store_error, 0);
}
