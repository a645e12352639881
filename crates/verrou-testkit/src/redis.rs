//! Private `redis-server`s.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::process::{self, ScratchDir};
use crate::server::{Flavor, Supervisor};
use crate::REDIS_URL_VAR;

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
        let program = find_redis_server()?;
        let scratch = ScratchDir::create("redis")?;
        let server = Supervisor::start(Redis, program, scratch, None)?;
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

/// How to run `redis-server`.
#[derive(Debug)]
struct Redis;

impl Flavor for Redis {
    const NAME: &'static str = "redis-server";
    /// Nothing is persisted, so nothing is lost; SIGTERM would wait for the next server
    /// tick (up to 100 ms).
    const STOP_SIGNAL: &'static str = "KILL";

    fn args(&self, dir: &Path, port: u16) -> Vec<OsString> {
        let mut args: Vec<OsString> = [
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            "",
            "--dir",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        args.push(dir.into());
        args
    }

    fn is_ready(&self, dir: &Path, port: u16) -> bool {
        answers_from(dir, port).unwrap_or(false)
    }
}

/// Whether a Redis server answers `PING` on `port` and works in `dir`.
fn answers_from(dir: &Path, port: u16) -> io::Result<bool> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"PING\r\n")?;
    let mut reader = BufReader::new(stream.try_clone()?);
    if read_line(&mut reader)? != b"+PONG" {
        return Ok(false);
    }
    stream.write_all(b"CONFIG GET dir\r\n")?;
    // Expect *2, $3, dir, $N, DIR.
    for expected in [&b"*2"[..], b"$3", b"dir"] {
        if read_line(&mut reader)? != expected {
            return Ok(false);
        }
    }
    read_line(&mut reader)?;
    Ok(read_line(&mut reader)? == dir.as_os_str().as_bytes())
}

/// One line of a RESP reply, without its CRLF.
fn read_line(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    if line.ends_with(b"\r\n") {
        line.truncate(line.len() - 2);
        Ok(line)
    } else {
        Err(io::ErrorKind::UnexpectedEof.into())
    }
}
