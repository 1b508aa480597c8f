//! One task per target: requests trace windows back to back and always drains them at full speed.
//!
//! The read loop only copies bytes into a buffer. Validation, compression and
//! the ring live in a separate processing task fed through a small queue; when
//! that falls behind, whole windows are dropped (and counted) rather than the
//! socket being read slowly, because a Go service whose trace reader stalls
//! buffers the trace in memory without bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info_span, Instrument};

use super::crash::{Crash, Cut, Verdict, Watch};
use super::events::{self, WindowError};
use super::process::{Captured, Item, Processor, Reservation};
use super::status::{SharedStatus, State};
use super::summarise::Summariser;
use crate::config::Target;
use crate::ring::window::{Truncation, Window};
use crate::ring::Builder;
use crate::ring::Rings;
use crate::telemetry::Metrics;
use crate::tls::ExtraRoots;
use gotrace::{FormatError, Walker};

/// Largest error body read from a target (500 / 400 answers).
const MAX_ERROR_BODY: usize = 4096;
/// Windows waiting for their last blocks and the ring. Two is enough: one
/// being finished while the next is read; more only hides a CPU shortage.
const PROCESS_QUEUE: usize = 2;
/// Raw bytes allowed to wait for compression within one window before the
/// rest of it is dropped (the target is still read at full speed).
const MAX_BACKLOG: usize = 8 * crate::ring::BLOCK;

/// A connection closed before any response this soon after the request
/// went out is the target closing a kept-alive connection (a server that is
/// shutting down closes it right after the last response), not a death
/// mid-window. A target that dies this early in a window, before its first
/// bytes, is missed (see the README's crash section).
const KEEPALIVE_CLOSE: Duration = Duration::from_millis(100);

/// Why an attempt ended without bytes to keep.
enum Failure {
    Error(WindowError),
    /// Nothing listens on the target's port.
    Refused(WindowError),
    /// The connection was lost `after` the request went out, before any
    /// response: the window was cut before its first byte.
    Lost {
        error: WindowError,
        after: Duration,
    },
    Shutdown,
}

/// Where every collector hands what it records.
#[derive(Clone)]
pub struct Outputs {
    pub rings: Arc<Rings>,
    pub metrics: Arc<Metrics>,
    /// The crash trigger's queue; `None` when crash detection is off.
    pub crashes: Option<mpsc::Sender<Box<Crash>>>,
}

pub struct Collector {
    target: Target,
    name: Arc<str>,
    /// Last window sequence number; shared with the collector this one
    /// replaces after a reload, so numbers keep rising for snapshots.
    seq: Arc<AtomicU64>,
    client: reqwest::Client,
    rings: Arc<Rings>,
    metrics: Arc<Metrics>,
    crashes: Option<mpsc::Sender<Box<Crash>>>,
    status: SharedStatus,
    shutdown: CancellationToken,
}

impl Collector {
    pub fn new(
        target: Target,
        seq: Arc<AtomicU64>,
        client: reqwest::Client,
        out: Outputs,
        status: SharedStatus,
        shutdown: CancellationToken,
    ) -> Self {
        let name = Arc::<str>::from(target.name.as_str());
        Collector {
            target,
            name,
            seq,
            client,
            rings: out.rings,
            metrics: out.metrics,
            crashes: out.crashes,
            status,
            shutdown,
        }
    }

    /// An HTTP client suited to one target: one kept-alive connection, no
    /// overall timeout (a window lasts as long as it lasts), a connect timeout.
    pub fn client_for(target: &Target, roots: &ExtraRoots) -> Result<reqwest::Client, reqwest::Error> {
        let builder = roots.reqwest(reqwest::Client::builder());
        builder
            .connect_timeout(target.connect_timeout)
            .pool_max_idle_per_host(1)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .http1_only()
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("flightrec/", env!("CARGO_PKG_VERSION")))
            .build()
    }

    pub async fn run(self) {
        let span = info_span!("collector", target = %self.name);
        self.run_inner().instrument(span).await
    }

    async fn run_inner(self) {
        let (tx, rx) = mpsc::channel(PROCESS_QUEUE);
        let processor = tokio::spawn(
            Processor {
                name: self.name.clone(),
                compression: self.target.compression,
                rings: self.rings.clone(),
                metrics: self.metrics.clone(),
                status: self.status.clone(),
                crashes: self.crashes.clone(),
                prev_end_ns: None,
                unsummarised: None,
            }
            .run(rx)
            .in_current_span(),
        );
        let labels = self.metrics.target(&self.name);
        self.metrics.freshness.started(&self.name);
        let mut window = self.target.window;
        self.metrics
            .window_seconds
            .get_or_create(&labels)
            .set(window.as_secs_f64());
        let mut failures = 0u32;
        let mut watch = Watch::default();
        let keep_for = self.target.max_age;
        while !self.shutdown.is_cancelled() {
            let attempt = match self.capture(window).await {
                Err(Failure::Refused(err)) => {
                    let verdict = watch.refused(&self.name, err.to_string(), keep_for);
                    self.judged(verdict, &tx).await;
                    Err(Failure::Error(err))
                }
                Err(Failure::Lost { error, after }) => {
                    let verdict = watch.lost(Cut {
                        seen_at: SystemTime::now(),
                        into_window: after,
                        window,
                        bytes: 0,
                        why: error.to_string(),
                        last_seq: self.seq.load(Ordering::Relaxed),
                    });
                    self.judged(verdict, &tx).await;
                    Err(Failure::Error(error))
                }
                other => other,
            };
            match attempt {
                Ok(mut captured) => {
                    if failures > 0 {
                        events::target_recovered(&self.name, failures);
                    }
                    failures = 0;
                    captured.seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
                    {
                        let mut st = self.status.lock();
                        st.state = State::Recording;
                        st.consecutive_failures = 0;
                    }
                    let cut = match &captured.truncation {
                        Some(Truncation::Disconnected(why)) => Some(Cut {
                            seen_at: captured.received_at,
                            into_window: captured
                                .received_at
                                .duration_since(captured.requested_at)
                                .unwrap_or_default(),
                            window,
                            bytes: captured.walker.received() as u64,
                            why: why.clone(),
                            last_seq: captured.seq,
                        }),
                        _ => None,
                    };
                    // A death this window shows is reported before the
                    // window is queued: it came from the next process.
                    let verdict = watch.window(&self.name, captured.walker.generations(), cut, keep_for);
                    self.judged(verdict, &tx).await;
                    let cut_by_shutdown = matches!(captured.truncation, Some(Truncation::Shutdown));
                    if tx.try_send(Item::Window(Box::new(captured))).is_err() {
                        self.fail(&WindowError::Backlog);
                    }
                    if cut_by_shutdown {
                        break;
                    }
                }
                Err(Failure::Shutdown) => break,
                Err(Failure::Error(WindowError::WriteTimeout { body, .. })) if window > MIN_WINDOW => {
                    self.fail(&WindowError::WriteTimeout {
                        window: crate::units::Secs(window).to_string(),
                        body,
                    });
                    let shorter = shorten(window);
                    events::window_shortened(&self.metrics, &self.name, window, shorter);
                    window = shorter;
                    self.status.lock().window = window;
                }
                Err(Failure::Error(err) | Failure::Refused(err) | Failure::Lost { error: err, .. }) => {
                    failures = failures.saturating_add(1);
                    self.fail(&err);
                    let delay = backoff(&err, failures, self.target.backoff_max);
                    {
                        let mut st = self.status.lock();
                        st.state = if matches!(err, WindowError::SlotBusy { .. }) {
                            State::SlotBusy
                        } else {
                            State::BackingOff
                        };
                        st.consecutive_failures = failures;
                    }
                    events::backing_off(&self.name, delay, failures);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.shutdown.cancelled() => break,
                    }
                }
            }
        }
        drop(tx);
        let _ = processor.await;
        self.status.lock().state = State::Stopped;
    }

    /// Logs and counts what an attempt made of a cut; a death goes to the
    /// processing task, behind the windows queued before it, so that the cut
    /// window is in the ring when the crash trigger freezes it.
    async fn judged(&self, verdict: Verdict, tx: &mpsc::Sender<Item>) {
        match verdict {
            Verdict::Nothing => {}
            Verdict::Crash(c) => {
                events::crash_seen(&self.metrics, &c);
                // Waiting here is safe: no window is being read.
                let _ = tx.send(Item::Crash(c)).await;
            }
            Verdict::Survived {
                cut,
                last_gen,
                first_gen,
            } => events::cut_survived(&self.metrics, &self.name, &cut, last_gen, first_gen),
            Verdict::Unjudged { cut, why } => events::cut_unjudged(&self.metrics, &self.name, &cut, why),
        }
    }

    fn fail(&self, err: &WindowError) {
        events::window_error(&self.metrics, &self.name, err);
        self.status.lock().last_error = Some((SystemTime::now(), err.to_string()));
    }

    /// One request: `Ok` with the bytes to validate (complete or cut), or why
    /// there is nothing to keep.
    async fn capture(&self, window: Duration) -> Result<Captured, Failure> {
        let url = self.target.trace_url(window);
        let requested_at = SystemTime::now();
        let started = tokio::time::Instant::now();
        // Headers may come only when the first 4 KiB of trace is flushed, or at
        // the end of a quiet window: the read timeout covers them too.
        let wait = self.target.read_timeout.max(window + Duration::from_secs(5));
        let send = tokio::time::timeout(wait, self.client.get(url).send());
        let response = tokio::select! {
            r = send => r,
            _ = self.shutdown.cancelled() => return Err(Failure::Shutdown),
        };
        let mut response = match response {
            Err(_) => {
                return Err(Failure::Error(WindowError::Request(format!(
                    "no response within {}",
                    crate::units::Secs(wait)
                ))))
            }
            Ok(Err(e)) => {
                let error = request_error(&e);
                let after = started.elapsed();
                return Err(if refused(&e) {
                    Failure::Refused(error)
                } else if lost(&e) && after >= KEEPALIVE_CLOSE {
                    Failure::Lost { error, after }
                } else {
                    Failure::Error(error)
                });
            }
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        if status != StatusCode::OK {
            let body = self.error_body(&mut response).await;
            return Err(Failure::Error(classify_status(status, body)));
        }

        let cap = self.target.max_window_bytes as usize;
        let mut walker = Walker::new();
        let mut builder = Builder::new(self.target.compression);
        let mut reservation = Reservation {
            rings: self.rings.clone(),
            target: self.name.clone(),
            bytes: 0,
        };
        // The summary is decoded from the blocks the builder seals, off this
        // loop: all it costs here is a handle and a try_send per MiB.
        let summariser = self.target.summaries.then(|| {
            let (s, mut tap) = Summariser::start();
            builder.on_sealed(move |block| tap.send(block));
            s
        });
        let mut overloaded = false;
        let mut truncation = None;
        // The silence limit alone never ends a body that drips a byte now and
        // then, or a server that ignores `seconds`: the collector would wait on
        // it forever and the ring would go stale. A window still streaming
        // `read_timeout` after it should have ended is cut.
        let overrun_at = started + window + self.target.read_timeout;
        loop {
            let silent_at = tokio::time::Instant::now() + self.target.read_timeout;
            let next = tokio::select! {
                c = tokio::time::timeout_at(silent_at.min(overrun_at), response.chunk()) => c,
                _ = self.shutdown.cancelled() => {
                    truncation = Some(Truncation::Shutdown);
                    break;
                }
            };
            let chunk = match next {
                Err(_) => {
                    truncation = Some(if overrun_at < silent_at {
                        Truncation::Overrun
                    } else {
                        Truncation::ReadTimeout
                    });
                    break;
                }
                Ok(Err(e)) => {
                    truncation = Some(Truncation::Disconnected(error_chain(&e)));
                    break;
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => chunk,
            };
            let room = cap.saturating_sub(walker.received());
            let capped = chunk.len() > room;
            let part = &chunk[..chunk.len().min(room)];
            if let Err(e) = walker.feed(part) {
                let err = match e {
                    FormatError::Corrupt { .. } => WindowError::Corrupt(e.to_string()),
                    e => WindowError::NotATrace(format!(
                        "{e} (Content-Type {:?}); is {} a Go net/http/pprof trace endpoint?",
                        content_type(&response),
                        self.target.path
                    )),
                };
                return Err(Failure::Error(err));
            }
            // Storing never slows reading: if compression falls behind, the
            // rest of this window is drained and dropped instead.
            if !overloaded {
                builder.push(part);
                if builder.backlog() > MAX_BACKLOG {
                    overloaded = true;
                } else {
                    let evicted = reservation.grow_to(builder.stored_len() as u64);
                    events::evicted(&self.metrics, &evicted);
                    builder.reuse(evicted.into_iter().flat_map(|(w, _)| Window::into_blocks(w)));
                }
            }
            if capped {
                truncation = Some(Truncation::ByteCap);
                break;
            }
        }
        // Dropping an unfinished response closes the connection, which ends
        // the trace on the target side at once.
        drop(response);
        if walker.received() == 0 {
            let why = match truncation {
                Some(Truncation::Shutdown) => return Err(Failure::Shutdown),
                Some(t) => format!("{} before any byte", t.label()),
                None => "empty body".into(),
            };
            return Err(Failure::Error(WindowError::NotATrace(why)));
        }
        if overloaded {
            return Err(Failure::Error(WindowError::Backlog));
        }
        Ok(Captured {
            seq: 0,
            requested_at,
            received_at: SystemTime::now(),
            walker,
            builder,
            reservation,
            truncation,
            summariser,
        })
    }

    async fn error_body(&self, response: &mut reqwest::Response) -> String {
        let mut body = Vec::new();
        let read = async {
            while let Ok(Some(chunk)) = response.chunk().await {
                body.extend_from_slice(&chunk);
                if body.len() >= MAX_ERROR_BODY {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
        body.truncate(MAX_ERROR_BODY);
        String::from_utf8_lossy(&body).trim().chars().take(300).collect()
    }
}

/// The shortest window the agent shortens to after WriteTimeout refusals.
const MIN_WINDOW: Duration = Duration::from_millis(250);

/// Halves the window, keeping whole seconds while above 2 s.
fn shorten(window: Duration) -> Duration {
    let half = window / 2;
    let shorter = if half >= Duration::from_secs(2) {
        Duration::from_secs(half.as_secs())
    } else {
        half
    };
    shorter.max(MIN_WINDOW)
}

fn classify_status(status: StatusCode, body: String) -> WindowError {
    if status == StatusCode::INTERNAL_SERVER_ERROR && body.contains("already enabled") {
        WindowError::SlotBusy { body }
    } else if status == StatusCode::BAD_REQUEST && body.contains("WriteTimeout") {
        WindowError::WriteTimeout {
            window: String::new(),
            body,
        }
    } else {
        WindowError::HttpStatus {
            status: status.as_u16(),
            body,
        }
    }
}

/// Exponential backoff with jitter. A busy trace slot starts slower: someone
/// else is using it on purpose, and hammering would only add noise.
fn backoff(err: &WindowError, failures: u32, max: Duration) -> Duration {
    let base = match err {
        WindowError::SlotBusy { .. } => Duration::from_secs(1),
        WindowError::Connect(_) => Duration::from_millis(200),
        _ => Duration::from_millis(500),
    };
    let exp = base.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let capped = exp.min(max);
    // Equal jitter: half fixed, half random, so many agents do not line up.
    let half = capped / 2;
    half + half.mul_f64(rand::random::<f64>())
}

fn request_error(e: &reqwest::Error) -> WindowError {
    let mut text = error_chain(e);
    if text.to_lowercase().contains("certificate") {
        text.push_str("; if the target's certificate comes from a private CA, set tls.ca_file to its PEM");
    }
    if e.is_connect() {
        WindowError::Connect(text)
    } else {
        WindowError::Request(text)
    }
}

/// The causes of `e`, from the outermost.
fn causes<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

/// Did the target refuse the connection: nothing listens on its port? A
/// reset while connecting counts too: a dying process's listening socket
/// resets the connections still waiting in its queue.
fn refused(e: &reqwest::Error) -> bool {
    use std::io::ErrorKind::{ConnectionRefused, ConnectionReset};
    e.is_connect()
        && causes(e).any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| matches!(io.kind(), ConnectionRefused | ConnectionReset))
        })
}

/// Was the connection closed or reset after the request went out, before
/// any response?
fn lost(e: &reqwest::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    !e.is_connect()
        && !e.is_timeout()
        && causes(e).any(|c| {
            c.downcast_ref::<hyper::Error>()
                .is_some_and(|h| h.is_incomplete_message() || h.is_canceled())
                || c.downcast_ref::<std::io::Error>().is_some_and(|io| {
                    matches!(
                        io.kind(),
                        BrokenPipe | ConnectionAborted | ConnectionReset | UnexpectedEof
                    )
                })
        })
}

/// The error and its causes on one line: reqwest's top message alone rarely
/// says what happened.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

fn content_type(r: &reqwest::Response) -> String {
    r.headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortening_halves_down_to_a_floor() {
        assert_eq!(shorten(Duration::from_secs(10)), Duration::from_secs(5));
        assert_eq!(shorten(Duration::from_secs(5)), Duration::from_secs(2));
        assert_eq!(shorten(Duration::from_secs(2)), Duration::from_secs(1));
        assert_eq!(shorten(Duration::from_secs(1)), Duration::from_millis(500));
        assert_eq!(shorten(Duration::from_millis(300)), MIN_WINDOW);
    }

    #[test]
    fn statuses_are_classified_by_go_s_own_bodies() {
        let busy = classify_status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Could not enable tracing: tracing is already enabled".into(),
        );
        assert_eq!(busy.reason(), "slot_busy");
        let wt = classify_status(
            StatusCode::BAD_REQUEST,
            "profile duration exceeds server's WriteTimeout".into(),
        );
        assert_eq!(wt.reason(), "write_timeout");
        assert_eq!(
            classify_status(StatusCode::NOT_FOUND, "404 page not found".into()).reason(),
            "http_status"
        );
        assert_eq!(
            classify_status(StatusCode::INTERNAL_SERVER_ERROR, "boom".into()).reason(),
            "http_status"
        );
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let max = Duration::from_secs(30);
        let err = WindowError::Connect("refused".into());
        for failures in 1..40 {
            let d = backoff(&err, failures, max);
            assert!(d <= max, "{d:?}");
        }
        let first = backoff(&err, 1, max);
        assert!(
            first >= Duration::from_millis(100) && first <= Duration::from_millis(200),
            "{first:?}"
        );
        let busy = backoff(&WindowError::SlotBusy { body: String::new() }, 1, max);
        assert!(
            busy >= Duration::from_millis(500),
            "slot busy starts slow: {busy:?}"
        );
    }
}
