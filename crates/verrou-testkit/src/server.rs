//! Starting, stopping and restarting a server on a port of its own.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::process::{self, Guarded, RunAs, ScratchDir};

/// How long a server may take to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How many free ports [`Supervisor::start`] tries before giving up.
const PORT_ATTEMPTS: usize = 5;

/// How long [`Supervisor::restart`] waits for its port to be free again.
const SAME_PORT_WAIT: Duration = Duration::from_secs(10);

/// Name of the server's log file in its scratch directory.
const LOG_FILE: &str = "server.log";

/// What one kind of server needs to be run.
pub(crate) trait Flavor {
    /// The program's name, for messages.
    const NAME: &'static str;
    /// The signal that makes the server shut down at once (`kill -s` syntax).
    const STOP_SIGNAL: &'static str;
    /// The server's command-line arguments.
    fn args(&self, dir: &Path, port: u16) -> Vec<OsString>;
    /// Whether the server started from `dir` accepts connections on `port`; `false` for a
    /// server started from elsewhere that happens to answer on that port.
    fn is_ready(&self, dir: &Path, port: u16) -> bool;
}

/// A server of flavor `F`, its scratch directory and its port.
#[derive(Debug)]
pub(crate) struct Supervisor<F> {
    flavor: F,
    program: PathBuf,
    run_as: Option<RunAs>,
    port: u16,
    /// Declared before `scratch`, so the server stops before its directory goes.
    process: Option<Guarded>,
    scratch: ScratchDir,
}

/// How one attempt to start a server went.
enum Launch {
    Ready,
    PortInUse,
}

impl<F: Flavor> Supervisor<F> {
    /// Starts `program` on a free port and waits until it accepts connections.
    pub(crate) fn start(
        flavor: F,
        program: PathBuf,
        scratch: ScratchDir,
        run_as: Option<RunAs>,
    ) -> io::Result<Supervisor<F>> {
        let mut server = Supervisor {
            flavor,
            program,
            run_as,
            port: 0,
            process: None,
            scratch,
        };
        for _ in 0..PORT_ATTEMPTS {
            server.port = process::free_port()?;
            if let Launch::Ready = server.launch()? {
                return Ok(server);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{} found its port taken {PORT_ATTEMPTS} times in a row; log: {}",
                F::NAME,
                server.log_path().display()
            ),
        ))
    }

    /// The port the server listens on.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Whether the server was started and not stopped or killed since (it may still have
    /// died on its own).
    pub(crate) fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// The server's log file (appended to by every start).
    pub(crate) fn log_path(&self) -> PathBuf {
        self.scratch.path().join(LOG_FILE)
    }

    /// Stops the server and waits until it has exited. Does nothing if it is not running.
    pub(crate) fn stop(&mut self) {
        self.process = None;
    }

    /// Sends the server `signal` (a name such as `KILL`) instead of its stop signal and
    /// waits until it has exited. Does nothing if it is not running.
    pub(crate) fn kill(&mut self, signal: &str) {
        if let Some(process) = self.process.take() {
            process.kill(signal);
        }
    }

    /// Stops the server if it runs, then starts it again on the same port.
    pub(crate) fn restart(&mut self) -> io::Result<()> {
        self.stop();
        let deadline = Instant::now() + SAME_PORT_WAIT;
        loop {
            if let Launch::Ready = self.launch()? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "{} cannot listen on 127.0.0.1:{} again: another process took the port",
                        F::NAME,
                        self.port
                    ),
                ));
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// Starts the server on `self.port` and waits until it accepts connections.
    fn launch(&mut self) -> io::Result<Launch> {
        let dir = self.scratch.path();
        let log = self.log_path();
        let log_start = process::file_len(&log);
        let mut guard = Guarded::spawn(
            &self.program,
            &self.flavor.args(dir, self.port),
            F::STOP_SIGNAL,
            dir,
            &log,
            self.run_as,
        )?;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = guard.try_wait()? {
                let output = process::read_from(&log, log_start);
                if output.contains("Address already in use") {
                    return Ok(Launch::PortInUse);
                }
                return Err(io::Error::other(format!(
                    "{} exited ({status}) instead of listening on 127.0.0.1:{}; the end of its log ({}):\n{}",
                    F::NAME,
                    self.port,
                    log.display(),
                    process::tail(&output, 20)
                )));
            }
            if self.flavor.is_ready(dir, self.port) {
                self.process = Some(guard);
                return Ok(Launch::Ready);
            }
            if Instant::now() >= deadline {
                drop(guard);
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} did not accept connections on 127.0.0.1:{} within {} s; the end of its log ({}):\n{}",
                        F::NAME,
                        self.port,
                        STARTUP_TIMEOUT.as_secs(),
                        log.display(),
                        process::tail(&process::read_from(&log, log_start), 20)
                    ),
                ));
            }
            sleep(process::POLL_INTERVAL);
        }
    }
}
