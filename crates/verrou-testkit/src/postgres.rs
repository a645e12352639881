//! Private PostgreSQL clusters.

use std::ffi::OsString;
use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::process::{self, Guarded, RunAs, ScratchDir};
use crate::server::{Flavor, Supervisor};
use crate::POSTGRES_URL_VAR;

/// The superuser `initdb` creates, and the database the URL names.
pub(crate) const SUPERUSER: &str = "postgres";

/// The system user that runs PostgreSQL when the tests run as root.
const SYSTEM_USER: &str = "postgres";

/// How long `initdb` (or another program that makes a cluster) may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// A private PostgreSQL cluster on 127.0.0.1 and a free port: created by `initdb` in a
/// temporary directory, trust authentication, durability off for speed (`fsync` and
/// `full_page_writes` off: safe against a crash of the server, not of the machine),
/// `max_connections = 300`. Its Unix
/// socket lives in the temporary directory too. Dropping it stops the server and removes
/// the directory; so does the end of the test process, even if the value is never dropped.
///
/// When the tests run as root, the server runs as the `postgres` system user (PostgreSQL
/// refuses root), which is created if missing.
#[derive(Debug)]
pub struct PostgresServer {
    pub(crate) server: Supervisor<Postgres>,
}

impl PostgresServer {
    /// Creates a cluster, starts it and waits until it accepts connections (about a second,
    /// most of it `initdb`).
    ///
    /// Fails if the PostgreSQL server programs are missing (the error says how to install
    /// them), or if the cluster cannot be created or started (the error shows the end of
    /// the relevant log).
    pub fn start() -> io::Result<PostgresServer> {
        let server = start_postgres(init_cluster)?;
        Ok(PostgresServer { server })
    }

    /// Like [`start`](Self::start), with a configuration of the test's own:
    ///
    /// * `files`, `(name, contents)`: written into the data directory, where relative paths
    ///   in settings point, with mode 0600 and owned by the server's user (as PostgreSQL
    ///   wants of a private key);
    /// * `settings`, lines such as `ssl = on`: appended to `postgresql.conf`. Those the
    ///   command line gives (the port, the addresses, `fsync`...) stay as described above;
    /// * `hba_lines`, rules such as `hostssl all all 127.0.0.1/32 trust`: put before the
    ///   rules of `initdb` in `pg_hba.conf`, so they decide first.
    ///
    /// A server whose rules turn plain TCP connections away is checked for readiness
    /// through its Unix socket (which `initdb`'s `local all all trust` rule lets in).
    ///
    /// ```no_run
    /// # fn main() -> std::io::Result<()> {
    /// # let (cert_pem, key_pem) = (String::new(), String::new());
    /// let server = verrou_testkit::PostgresServer::start_with(
    ///     &[("server.crt", cert_pem.as_bytes()), ("server.key", key_pem.as_bytes())],
    ///     &["ssl = on", "ssl_cert_file = 'server.crt'", "ssl_key_file = 'server.key'"],
    ///     &["hostssl all all 127.0.0.1/32 trust", "hostnossl all all 127.0.0.1/32 reject"],
    /// )?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn start_with(
        files: &[(&str, &[u8])],
        settings: &[&str],
        hba_lines: &[&str],
    ) -> io::Result<PostgresServer> {
        let server = start_postgres(|tools, dir| {
            init_cluster(tools, dir)?;
            configure_cluster(&dir.join("data"), files, settings, hba_lines)
        })?;
        Ok(PostgresServer { server })
    }

    /// The URL to connect to: `postgres://postgres@127.0.0.1:PORT/postgres` (superuser,
    /// no password).
    pub fn url(&self) -> String {
        format!(
            "postgres://{SUPERUSER}@127.0.0.1:{}/{SUPERUSER}",
            self.port()
        )
    }

    /// The port the server listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Stops the server (a fast shutdown: sessions are ended, not waited for) and waits
    /// until it has exited. Does nothing if it is already stopped.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Crashes the server: an immediate shutdown (`SIGQUIT` to the postmaster, as
    /// `pg_ctl stop -m immediate` does), which ends every process at once without a
    /// shutdown checkpoint. Waits until it has exited. Does nothing if it is already
    /// stopped. [`restart`](Self::restart) brings it back, after crash recovery, with every
    /// committed transaction (commits are synchronous; only `fsync` is off, and the
    /// operating system keeps what the server wrote).
    pub fn crash(&mut self) {
        self.server.kill("QUIT");
    }

    /// Starts the server again on the same port and with the same data, stopping it first
    /// if it runs.
    pub fn restart(&mut self) -> io::Result<()> {
        self.server.restart()
    }

    /// Everything the server has logged so far, across restarts. Failed statements are
    /// logged as `ERROR:` lines followed by a `STATEMENT:` line (`log_min_messages` is
    /// `warning`, `log_min_error_statement` is `error`). Empty if the log cannot be read.
    pub fn log_contents(&self) -> String {
        fs::read(self.server.log_path())
            .map(|log| String::from_utf8_lossy(&log).into_owned())
            .unwrap_or_default()
    }
}

/// The URL of the PostgreSQL server for this test process: `VERROU_POSTGRES_URL` if it is
/// set, otherwise a private cluster started on the first call and stopped when the process
/// exits.
///
/// # Panics
///
/// If `VERROU_POSTGRES_URL` is not set and no cluster can be started: the message says why
/// and how to get one. A test that needs PostgreSQL fails loudly rather than passing
/// silently.
pub fn postgres_url() -> String {
    static SHARED: OnceLock<Result<PostgresServer, String>> = OnceLock::new();
    crate::shared_server_url(
        &SHARED,
        POSTGRES_URL_VAR,
        "PostgreSQL",
        PostgresServer::start,
        PostgresServer::url,
    )
}

/// The first directory holding both `postgres` and `initdb`: on `PATH`, else the newest
/// `/usr/lib/postgresql/VERSION/bin` (where Debian and Ubuntu put them).
fn find_bin_dir() -> io::Result<PathBuf> {
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    process::path_dirs()
        .into_iter()
        .chain(versions.into_iter().map(|(_, dir)| dir))
        .find(|dir| {
            process::is_executable(&dir.join("postgres"))
                && process::is_executable(&dir.join("initdb"))
        })
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "the PostgreSQL server programs (postgres, initdb) are neither on PATH nor \
                     in /usr/lib/postgresql/*/bin. Install them (Debian/Ubuntu: \
                     `sudo apt-get install postgresql`), or set {POSTGRES_URL_VAR} to a \
                     PostgreSQL server the tests may use (e.g. \
                     postgres://postgres@127.0.0.1:5432/postgres), or run ./scripts/test.sh, \
                     which installs what is missing and starts private servers"
                ),
            )
        })
}

/// The `postgres` system user, created if missing (we run as root).
fn system_user() -> io::Result<RunAs> {
    if let Some(user) = RunAs::lookup(SYSTEM_USER)? {
        return Ok(user);
    }
    let useradd = Command::new("useradd")
        .args(["--system", "--user-group", "--no-create-home"])
        .args(["--home-dir", "/var/lib/postgresql", "--shell", "/bin/sh"])
        .arg(SYSTEM_USER)
        .stdout(Stdio::null())
        .output();
    // Another test process may have created it meanwhile: look again either way.
    if let Some(user) = RunAs::lookup(SYSTEM_USER)? {
        return Ok(user);
    }
    let why = match useradd {
        Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        Err(e) => e.to_string(),
    };
    Err(io::Error::other(format!(
        "PostgreSQL refuses to run as root, and there is no `{SYSTEM_USER}` user to run it as \
         (`useradd --system {SYSTEM_USER}` failed: {why}). Create that user, run the tests as \
         another user, or set {POSTGRES_URL_VAR} to a PostgreSQL server the tests may use"
    )))
}

/// Creates a scratch directory, has `create` make a cluster in its `data` directory with
/// the programs of `tools`, then starts that cluster and waits until it accepts
/// connections.
pub(crate) fn start_postgres(
    create: impl FnOnce(&Tools, &Path) -> io::Result<()>,
) -> io::Result<Supervisor<Postgres>> {
    let bin = find_bin_dir()?;
    let scratch = ScratchDir::create("postgres")?;
    let run_as = if scratch.created_by_root()? {
        let user = system_user()?;
        scratch.give_to(user)?;
        Some(user)
    } else {
        None
    };
    let tools = Tools { bin, run_as };
    create(&tools, scratch.path())?;
    Supervisor::start(Postgres, tools.bin.join("postgres"), scratch, run_as)
}

/// The PostgreSQL programs, and the user to run them as.
#[derive(Debug)]
pub(crate) struct Tools {
    bin: PathBuf,
    run_as: Option<RunAs>,
}

impl Tools {
    /// Runs the program `name` with `args` in `dir`, logging to `DIR/NAME.log`, and waits
    /// until it has succeeded.
    pub(crate) fn run(&self, name: &str, args: &[OsString], dir: &Path) -> io::Result<()> {
        let log = dir.join(format!("{name}.log"));
        let mut tool = Guarded::spawn(&self.program(name), args, "TERM", dir, &log, self.run_as)?;
        let failure = match tool.wait_timeout(TOOL_TIMEOUT)? {
            Some(status) if status.success() => return Ok(()),
            Some(status) => format!("failed ({status})"),
            None => format!("did not finish within {} s", TOOL_TIMEOUT.as_secs()),
        };
        drop(tool);
        Err(io::Error::other(format!(
            "{name} {failure}; the end of its log ({}):\n{}",
            log.display(),
            process::tail(&process::read_from(&log, 0), 20)
        )))
    }

    /// The program `name`: beside `postgres`, or beside what `postgres` links to (a
    /// directory on `PATH` may have links to some programs only).
    fn program(&self, name: &str) -> PathBuf {
        let beside = self.bin.join(name);
        if process::is_executable(&beside) {
            return beside;
        }
        fs::canonicalize(self.bin.join("postgres"))
            .ok()
            .and_then(|postgres| Some(postgres.parent()?.join(name)))
            .filter(|program| process::is_executable(program))
            .unwrap_or(beside)
    }
}

/// Runs `initdb` into `DIR/data`, logging to `DIR/initdb.log`.
fn init_cluster(tools: &Tools, dir: &Path) -> io::Result<()> {
    let args: Vec<OsString> = vec![
        "-D".into(),
        dir.join("data").into(),
        "--username".into(),
        SUPERUSER.into(),
        "--auth=trust".into(),
        "--encoding=UTF8".into(),
        "--locale=C".into(),
        "--no-sync".into(),
    ];
    tools.run("initdb", &args, dir)
}

/// Writes `files` into the cluster's `data` directory (0600, owned like the directory),
/// appends `settings` to its `postgresql.conf` and puts `hba_lines` first in its
/// `pg_hba.conf`: see [`PostgresServer::start_with`].
fn configure_cluster(
    data: &Path,
    files: &[(&str, &[u8])],
    settings: &[&str],
    hba_lines: &[&str],
) -> io::Result<()> {
    let owner = fs::metadata(data)?;
    for (name, contents) in files {
        let path = data.join(name);
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?
            .write_all(contents)?;
        std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid()))?;
    }
    let mut conf = fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))?;
    for setting in settings {
        writeln!(conf, "{setting}")?;
    }
    let hba = data.join("pg_hba.conf");
    let rules = fs::read_to_string(&hba)?;
    let mut first = hba_lines.join("\n");
    first.push('\n');
    fs::write(&hba, first + &rules)
}

/// How to run `postgres` on a cluster made by [`start_postgres`].
#[derive(Debug)]
pub(crate) struct Postgres;

impl Flavor for Postgres {
    const NAME: &'static str = "postgres";
    /// A fast shutdown: ends sessions instead of waiting for them.
    const STOP_SIGNAL: &'static str = "INT";

    fn args(&self, dir: &Path, port: u16) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "-D".into(),
            dir.join("data").into(),
            "-p".into(),
            port.to_string().into(),
        ];
        let mut socket_dir = OsString::from("unix_socket_directories=");
        socket_dir.push(dir);
        let settings = [
            socket_dir,
            "listen_addresses=127.0.0.1".into(),
            "max_connections=300".into(),
            "fsync=off".into(),
            // On, so that a transaction committed before a crash survives it: with it
            // off, the last commits may still sit in shared memory when the server dies.
            // Without fsync it only costs a write() per commit.
            "synchronous_commit=on".into(),
            "full_page_writes=off".into(),
            "logging_collector=off".into(),
            "log_destination=stderr".into(),
            "log_min_messages=warning".into(),
            "log_min_error_statement=error".into(),
            // A standby whose primary went away retries this often, and only then sees
            // that it was promoted: 5 s by default.
            "wal_retrieve_retry_interval=100ms".into(),
        ];
        for setting in settings {
            args.push("-c".into());
            args.push(setting);
        }
        args
    }

    fn is_ready(&self, dir: &Path, port: u16) -> bool {
        // The postmaster writes "ready" into its pid file once it listens; only ours writes
        // there, so whoever then answers on the port is ours.
        postmaster_ready(&dir.join("data/postmaster.pid"), port)
            && accepts_connections(dir, port).unwrap_or(false)
    }
}

/// Whether the pid file says the postmaster listens on `port` and is ready.
fn postmaster_ready(pid_file: &Path, port: u16) -> bool {
    let Ok(contents) = fs::read_to_string(pid_file) else {
        return false;
    };
    // Line 4 is the port, line 8 the status (see pidfile.h).
    let lines: Vec<&str> = contents.lines().map(str::trim).collect();
    lines.get(3) == Some(&port.to_string().as_str()) && lines.get(7) == Some(&"ready")
}

/// Whether the server on `port` lets the superuser in: over TCP, or else (for a server
/// whose rules turn plain TCP away, see [`PostgresServer::start_with`]) through its Unix
/// socket in `dir`.
fn accepts_connections(dir: &Path, port: u16) -> io::Result<bool> {
    if let Some(mut stream) = log_in(port)? {
        stream.write_all(&TERMINATE)?;
        return Ok(true);
    }
    let socket = UnixStream::connect(dir.join(format!(".s.PGSQL.{port}")))?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    match authenticate(socket)? {
        Some(mut socket) => socket.write_all(&TERMINATE).map(|()| true),
        None => Ok(false),
    }
}

/// The Terminate message.
const TERMINATE: [u8; 5] = [b'X', 0, 0, 0, 4];

/// A session of the superuser on the server on `port`, just past authentication; `None` if
/// the server turns the superuser away (while it starts up, say). A protocol 3.0 startup
/// that ends in AuthenticationOk.
fn log_in(port: u16) -> io::Result<Option<TcpStream>> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&address, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    authenticate(stream)
}

/// Logs the superuser in on `stream`, a new connection to a server: `None` if the server
/// turns it away.
fn authenticate<S: Read + Write>(mut stream: S) -> io::Result<Option<S>> {
    let mut body = 196_608_u32.to_be_bytes().to_vec(); // protocol 3.0
    for field in ["user", SUPERUSER, "database", SUPERUSER] {
        body.extend_from_slice(field.as_bytes());
        body.push(0);
    }
    body.push(0);
    let length = u32::try_from(body.len() + 4).map_err(io::Error::other)?;
    stream.write_all(&length.to_be_bytes())?;
    stream.write_all(&body)?;
    // AuthenticationOk is 'R', length 8, code 0; an error ('E') is at least as long.
    let mut reply = [0_u8; 9];
    stream.read_exact(&mut reply)?;
    Ok((reply == [b'R', 0, 0, 0, 8, 0, 0, 0, 0]).then_some(stream))
}

/// Runs `sql` as the superuser on the server on `port` (a simple query) and returns the
/// first column of its first row as text: `None` if there is no row or the value is NULL.
pub(crate) fn query_value(port: u16, sql: &str) -> io::Result<Option<String>> {
    let stream = log_in(port)?.ok_or_else(|| {
        io::Error::other(format!("the server on {port} turns the superuser away"))
    })?;
    let mut session = BufReader::new(stream);
    // The rest of the startup: parameters, the cancellation key, ReadyForQuery.
    read_results(&mut session)?;
    let length = u32::try_from(4 + sql.len() + 1).map_err(io::Error::other)?;
    let mut query = vec![b'Q'];
    query.extend_from_slice(&length.to_be_bytes());
    query.extend_from_slice(sql.as_bytes());
    query.push(0);
    session.get_mut().write_all(&query)?;
    let value = read_results(&mut session)
        .map_err(|e| io::Error::new(e.kind(), format!("`{sql}` on 127.0.0.1:{port}: {e}")))?;
    // Fails only if the server has gone, which ends the session too.
    let _ = session.get_mut().write_all(&TERMINATE);
    Ok(value)
}

/// Reads messages up to ReadyForQuery; returns the first column of the first row, or the
/// error the server reported.
fn read_results(session: &mut impl Read) -> io::Result<Option<String>> {
    let mut first_row = None;
    let mut error = None;
    loop {
        let mut header = [0_u8; 5];
        session.read_exact(&mut header)?;
        let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        let length = usize::try_from(length)
            .ok()
            .and_then(|length| length.checked_sub(4))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad message length"))?;
        let mut body = vec![0; length];
        session.read_exact(&mut body)?;
        match header[0] {
            b'D' if first_row.is_none() => first_row = Some(first_column(&body)),
            b'E' => error = Some(error_message(&body)),
            b'Z' => {
                return match error {
                    Some(message) => Err(io::Error::other(message)),
                    None => Ok(first_row.flatten()),
                }
            }
            _ => {}
        }
    }
}

/// The first column of a DataRow message's body, as text; `None` if NULL or absent.
fn first_column(body: &[u8]) -> Option<String> {
    let (count, rest) = body.split_first_chunk::<2>()?;
    if u16::from_be_bytes(*count) == 0 {
        return None;
    }
    let (length, rest) = rest.split_first_chunk::<4>()?;
    let length = usize::try_from(i32::from_be_bytes(*length)).ok()?; // -1 is NULL
    rest.get(..length)
        .map(|value| String::from_utf8_lossy(value).into_owned())
}

/// The severity and message of an ErrorResponse message's body.
fn error_message(body: &[u8]) -> String {
    let field = |code: u8| {
        body.split(|&b| b == 0)
            .find(|field| field.first() == Some(&code))
            .map(|field| String::from_utf8_lossy(&field[1..]).into_owned())
            .unwrap_or_default()
    };
    format!("{}: {}", field(b'S'), field(b'M'))
}
