//! Where log lines go: a bounded queue and one low-priority thread that writes them to
//! stdout in batches. A request thread only pushes its finished line; it wakes the
//! thread only when the thread is idle, and waits (never drops) when the queue is full.
//! After a wake the thread lingers a few milliseconds so that, under load, the lines of
//! many requests share one wake-up and one `write`.

use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// Lines waiting to be written before request threads wait.
const CAPACITY: usize = 16 * 1024;
/// How long the thread gathers lines after a wake before writing them.
const LINGER: Duration = Duration::from_millis(10);

enum Msg {
    Line(Vec<u8>),
    /// Write everything queued before, then stop.
    Stop,
}

/// The writer handed to the log layer (cheap to clone: a queue handle).
#[derive(Clone)]
pub struct LineWriter {
    tx: SyncSender<Msg>,
}

/// Writes what is still queued and stops the thread when dropped.
pub struct Guard {
    tx: SyncSender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the writing thread over `out`.
pub fn spawn<W: Write + Send + 'static>(out: W) -> std::io::Result<(LineWriter, Guard)> {
    let (tx, rx) = sync_channel(CAPACITY);
    let thread = std::thread::Builder::new()
        .name("memproxy-log".into())
        .spawn(move || run(rx, out))?;
    Ok((
        LineWriter { tx: tx.clone() },
        Guard {
            tx,
            thread: Some(thread),
        },
    ))
}

fn run<W: Write>(rx: Receiver<Msg>, out: W) {
    crate::storage::batch::lower_priority();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(first) = rx.recv() {
        let mut stop = false;
        let mut take = |msg: Msg, out: &mut std::io::BufWriter<W>| match msg {
            Msg::Line(line) => {
                let _ = out.write_all(&line);
            }
            Msg::Stop => stop = true,
        };
        let lingering = matches!(first, Msg::Line(_));
        take(first, &mut out);
        if lingering {
            std::thread::sleep(LINGER);
        }
        for msg in rx.try_iter() {
            take(msg, &mut out);
        }
        let _ = out.flush();
        if stop {
            return;
        }
    }
    let _ = out.flush();
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    /// Queues `buf` as one piece (the log layer writes each line with one call).
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.tx
            .send(Msg::Line(buf.to_vec()))
            .map_err(|_| std::io::Error::other("the log writer has stopped"))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LineWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_in_order_by_the_time_the_guard_is_dropped() {
        let sink = Sink::default();
        let (writer, guard) = spawn(sink.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut w = writer.make_writer();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        w.write_all(format!("{t} {i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20_000);
        for t in 0..4 {
            let mine: Vec<usize> = lines
                .iter()
                .filter_map(|l| l.strip_prefix(&format!("{t} ")))
                .map(|i| i.parse().unwrap())
                .collect();
            assert_eq!(mine, (0..5000).collect::<Vec<_>>());
        }
    }
}
