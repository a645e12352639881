//! What the data servers granted, and when the sentinels announced a failover, by the
//! clock of this machine (the servers run on it too).

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use verrou_testkit::RedisSentinelSet;

use crate::topology::sentinel_ports;

/// `SystemTime` as seconds since the Unix epoch.
pub(crate) fn seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// A connection kept open to a server on a thread of its own, sending `command` on each
/// (re)connection and handing every line it reads to `line` (reconnecting when the server
/// closes it), until dropped.
struct Tap {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Tap {
    fn start(port: u16, command: &'static str, line: impl FnMut(&str) + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut line = line;
            while !stopping.load(Ordering::SeqCst) {
                let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
                if stream.write_all(command.as_bytes()).is_err() {
                    continue;
                }
                let mut reader = BufReader::new(stream);
                let mut text = String::new();
                while !stopping.load(Ordering::SeqCst) {
                    match reader.read_line(&mut text) {
                        Ok(0) => break,
                        Ok(_) => {
                            line(text.trim_end());
                            text.clear();
                        }
                        Err(error)
                            if matches!(
                                error.kind(),
                                ErrorKind::WouldBlock | ErrorKind::TimedOut
                            ) => {}
                        Err(_) => break,
                    }
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// When a data server granted locks: `MONITOR` shows each fencing counter `INCR` a take
/// script runs (`[0 lua] "incr" "verrou:fence:{N}"`), which it does only when it took the
/// key, with the server's time.
pub(crate) struct Grants {
    times: Arc<Mutex<Vec<f64>>>,
    _tap: Tap,
}

impl Grants {
    /// Starts watching the data server on `port`.
    pub(crate) fn watch(port: u16) -> Self {
        let times = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&times);
        let tap = Tap::start(port, "MONITOR\r\n", move |line| {
            if line.contains(" lua] \"incr\" \"verrou:fence:") {
                let at = line
                    .trim_start_matches('+')
                    .split_whitespace()
                    .next()
                    .and_then(|time| time.parse().ok());
                if let Some(at) = at {
                    seen.lock().unwrap_or_else(PoisonError::into_inner).push(at);
                }
            }
        });
        let grants = Self { times, _tap: tap };
        // MONITOR is on once the server answered the tap's command: wait for one probe.
        std::thread::sleep(Duration::from_millis(200));
        grants
    }

    /// The times (seconds since the Unix epoch, server clock) of the grants seen so far.
    pub(crate) fn times(&self) -> Vec<f64> {
        self.times
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// When a sentinel first announced a failover (`+switch-master`), by this machine's clock.
pub(crate) struct Switches {
    first: Arc<Mutex<Option<SystemTime>>>,
    _taps: Vec<Tap>,
}

impl Switches {
    /// Listens on every sentinel of `set`.
    pub(crate) fn watch(set: &RedisSentinelSet) -> Self {
        let first = Arc::new(Mutex::new(None));
        let taps = sentinel_ports(set)
            .into_iter()
            .map(|port| {
                let first = Arc::clone(&first);
                let mut switch_next = false;
                Tap::start(port, "SUBSCRIBE +switch-master\r\n", move |line| {
                    if switch_next && line.starts_with("verrou ") {
                        first
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .get_or_insert_with(SystemTime::now);
                    }
                    switch_next =
                        line == "+switch-master" || (switch_next && line.starts_with('$'));
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        Self { first, _taps: taps }
    }

    /// When the first switch was heard; waits for it at most `limit`.
    pub(crate) fn first(&self, limit: Duration) -> SystemTime {
        let started = Instant::now();
        loop {
            if let Some(at) = *self.first.lock().unwrap_or_else(PoisonError::into_inner) {
                return at;
            }
            assert!(
                started.elapsed() < limit,
                "no +switch-master within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
