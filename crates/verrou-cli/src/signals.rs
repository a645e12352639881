//! The signals `verrou run` catches to hand them to its job, and the sending of signals.

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// What `run` catches and passes on to the job: the signals that ask a process to stop, or
/// that a job may expect from its operator.
const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// The [`FORWARDED`] signals this process receives, in arrival order. Once listening, they
/// no longer stop this process: it is up to the caller to act on them.
#[derive(Debug)]
pub(crate) struct Caught {
    received: mpsc::UnboundedReceiver<Signal>,
}

impl Caught {
    /// Starts catching (on the current Tokio runtime).
    pub(crate) fn start() -> std::io::Result<Self> {
        let (sender, received) = mpsc::unbounded_channel();
        for kind in FORWARDED {
            let mut stream = signal(SignalKind::from_raw(kind as i32))?;
            let sender = sender.clone();
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    if sender.send(kind).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Self { received })
    }

    /// The next signal.
    pub(crate) async fn next(&mut self) -> Signal {
        match self.received.recv().await {
            Some(signal) => signal,
            // The listeners never stop while this receiver lives.
            None => std::future::pending().await,
        }
    }
}

/// Sends `signal` to the process group `group` (a job started as the leader of its own
/// group). A group that is already gone is not an error: there is no one left to tell.
pub(crate) fn send_to_group(group: u32, signal: Signal) {
    if let Ok(group) = i32::try_from(group) {
        let _ = killpg(Pid::from_raw(group), signal);
    }
}
