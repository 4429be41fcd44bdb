//! Shutdown with a grace period: after the signal, in-flight streams get
//! `server.shutdown_grace_seconds` to finish; then each still open ends with an error event
//! in its client's wire format (its usage row written as usual), so the process exits.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// Tells open streams to end now. Cheap to clone; one per server.
#[derive(Clone)]
pub struct Drain {
    tx: Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        let (tx, rx) = watch::channel(false);
        Self {
            tx: Arc::new(tx),
            rx,
        }
    }
}

impl Drain {
    /// Ends every open stream (each sends its error event and closes).
    pub fn stop_streams(&self) {
        self.tx.send_replace(true);
    }

    /// Resolves once [`Drain::stop_streams`] was called (at once if it already was).
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.rx.clone();
        async move {
            // An error means the sender is gone: the server is gone, nothing to wait for.
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    /// Wraps the shutdown signal: once it resolves, streams get `grace` before
    /// [`Drain::stop_streams`] ends them.
    pub fn after_signal(
        &self,
        signal: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> impl Future<Output = ()> + Send + 'static {
        let (fired_tx, fired_rx) = tokio::sync::oneshot::channel::<()>();
        let drain = self.clone();
        tokio::spawn(async move {
            if fired_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
                tracing::warn!(
                    grace_seconds = grace.as_secs_f64(),
                    "shutdown grace period over; ending the streams still open"
                );
                drain.stop_streams();
            }
        });
        async move {
            signal.await;
            let _ = fired_tx.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn streams_stop_only_after_the_grace_period() {
        tokio::time::pause();
        let drain = Drain::default();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = drain.after_signal(
            async {
                let _ = go_rx.await;
            },
            Duration::from_secs(5),
        );
        let waiter = tokio::spawn(drain.stopped());
        tokio::spawn(signal);
        go_tx.send(()).unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(!waiter.is_finished());
        tokio::time::sleep(Duration::from_secs(2)).await;
        waiter.await.unwrap();
        // A stream that starts waiting afterwards stops at once.
        drain.stopped().await;
    }
}
