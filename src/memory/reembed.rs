//! Re-embedding in the background: when vectors are turned on, or the embedding model
//! changes, the memories stored before have no vector of the model. At start memproxy
//! walks them ([`MemoryStore::unembedded`]), a page at a time, and hands each page to the
//! write queue, which embeds and stores it on its own low-priority thread, as it does for
//! new memories. Searches meanwhile rank the memories not yet embedded lexically only.
//! Progress goes to the log (a bar, every few seconds) and to
//! `memproxy_memory_reembed_pending` in `/metrics`.

use std::sync::Weak;
use std::time::{Duration, Instant};

use super::MemoryService;

/// Memories per page: one embedding call each (an external model's request included).
pub const PAGE: usize = 128;

/// How often progress is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Walks the memories without a vector of the service's model and has them embedded;
/// returns how many were handed over. Ends early when the service is dropped or its
/// queue shut down; a store error ends the walk (the next start takes it up again).
pub async fn run(service: Weak<MemoryService>) -> u64 {
    let Some((store, model)) = service.upgrade().and_then(|s| {
        let model = s.embedder.as_ref()?.model().to_string();
        Some((s.store.clone(), model))
    }) else {
        return 0;
    };
    let total = match store.count_unembedded(&model).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "re-embedding: cannot count the memories to embed");
            return 0;
        }
    };
    if total == 0 {
        return 0;
    }
    tracing::info!(
        total,
        model = %model,
        "re-embedding memories stored without a vector of this model, in the background; \
         searches rank them lexically until then"
    );
    let pending = metrics::gauge!("memproxy_memory_reembed_pending");
    pending.set(total as f64);
    let (mut done, mut cursor, mut logged) = (0u64, None::<String>, Instant::now());
    loop {
        let page = match store.unembedded(&model, cursor.as_deref(), PAGE).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, done, total, "re-embedding stopped: the store failed");
                break;
            }
        };
        if page.items.is_empty() {
            break;
        }
        let n = page.items.len() as u64;
        let Some(s) = service.upgrade() else { break };
        if !s.queue.embed_later(page.items).await {
            break;
        }
        // Written before the next page is read: the queue never holds more than a page
        // of them, and the figures below are what is stored.
        s.queue.flush().await;
        drop(s);
        done += n;
        pending.set(total.saturating_sub(done) as f64);
        if logged.elapsed() >= LOG_EVERY {
            logged = Instant::now();
            tracing::info!("re-embedding {}", bar(done, total));
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    pending.set(0.0);
    tracing::info!(done, total, "re-embedding finished {}", bar(done, total));
    done
}

/// `[#######-------------]  35 % (35000 of 100000)`.
fn bar(done: u64, total: u64) -> String {
    const WIDTH: u64 = 20;
    let done = done.min(total);
    let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH);
    let pct = (done * 100).checked_div(total).unwrap_or(100);
    format!(
        "[{}{}] {pct:>3} % ({done} of {total})",
        "#".repeat(filled as usize),
        "-".repeat((WIDTH - filled) as usize)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_with_progress() {
        assert_eq!(bar(0, 100), "[--------------------]   0 % (0 of 100)");
        assert_eq!(bar(35, 100), "[#######-------------]  35 % (35 of 100)");
        assert_eq!(bar(100, 100), "[####################] 100 % (100 of 100)");
        assert_eq!(bar(5, 0), "[####################] 100 % (0 of 0)");
    }
}
