//! Server processes and scratch directories that cannot outlive the test process.
//!
//! Rust never drops statics, and a test process may be killed outright, so cleanup cannot
//! rest on `Drop` alone. Every process and directory here is watched by a small `sh`
//! helper whose stdin is a pipe held by this process. The write end is close-on-exec, so
//! only this process holds it; when it is closed (by `Drop`, by exit, or by the kernel when
//! this process is killed) the helper reads end-of-file and cleans up:
//!
//! * a [`Guarded`] process is sent its stop signal (and `SIGKILL` if it ignores that);
//! * a [`ScratchDir`] is removed, once no guarded process runs in it any more.
//!
//! The helpers run in their own process group, so a Ctrl-C in the terminal reaches the
//! test process, not them: they clean up after it instead of dying with it.

use std::collections::hash_map::RandomState;
use std::ffi::OsString;
use std::fs::{self, DirBuilder, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// `sh -c GUARD sh DIR SIGNAL PROGRAM ARGS...`: runs PROGRAM in the background; when stdin
/// reaches end-of-file, sends it SIGNAL, then SIGKILL if it is still alive after 30 s. A
/// line on stdin names another signal to send instead of SIGNAL (see [`Guarded::kill`]).
/// Exits with PROGRAM's status as soon as PROGRAM exits, for whatever reason. While
/// PROGRAM runs, `DIR/.running` exists (the janitor waits for it to go).
const GUARD_SCRIPT: &str = r#"
dir=$1 sig=$2
shift 2
exec 3<&0
: >"$dir/.running"
"$@" </dev/null 3<&- &
srv=$!
{
  read -r line <&3
  [ -z "$line" ] || sig=$line
  kill -s "$sig" "$srv" 2>/dev/null
  n=0
  while kill -0 "$srv" 2>/dev/null && [ "$n" -lt 300 ]; do sleep 0.1; n=$((n + 1)); done
  [ "$n" -lt 300 ] || kill -s KILL "$srv" 2>/dev/null
} &
rdr=$!
exec 3<&-
wait "$srv"
status=$?
kill "$rdr" 2>/dev/null
wait "$rdr"
rm -f "$dir/.running"
exit "$status"
"#;

/// `sh -c JANITOR sh DIR`: when stdin reaches end-of-file, waits (at most 60 s) for the
/// guarded process running in DIR to be gone, then removes DIR.
const JANITOR_SCRIPT: &str = r#"
cat >/dev/null 2>&1
n=0
while [ -e "$1/.running" ] && [ "$n" -lt 600 ]; do sleep 0.1; n=$((n + 1)); done
rm -rf -- "$1"
"#;

/// A system user to run a server as (PostgreSQL refuses to run as root).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunAs {
    uid: u32,
    gid: u32,
}

impl RunAs {
    /// The ids of `user`, or `None` if there is no such user.
    pub(crate) fn lookup(user: &str) -> io::Result<Option<RunAs>> {
        let (Some(uid), Some(gid)) = (id_of(user, "-u")?, id_of(user, "-g")?) else {
            return Ok(None);
        };
        Ok(Some(RunAs { uid, gid }))
    }
}

/// `id FLAG USER`, parsed; `None` if `id` says there is no such user.
fn id_of(user: &str, flag: &str) -> io::Result<Option<u32>> {
    let output = Command::new("id")
        .args([flag, user])
        .stderr(Stdio::null())
        .output()?;
    if !output.status.success() {
        return Ok(None);
    }
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .map(Some)
        .map_err(|e| io::Error::other(format!("unexpected output from `id {flag} {user}`: {e}")))
}

/// A private directory under the system temp dir, removed when dropped or, failing that,
/// when this process exits.
#[derive(Debug)]
pub(crate) struct ScratchDir {
    path: PathBuf,
    janitor: Child,
}

impl ScratchDir {
    /// Creates `verrou-KIND-PID-N` (mode 0700) in the system temp dir.
    pub(crate) fn create(kind: &str) -> io::Result<ScratchDir> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let base = std::env::temp_dir();
        let mut attempts = 0;
        let path = loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("verrou-{kind}-{}-{n}", std::process::id()));
            attempts += 1;
            match DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => break path,
                // Left over by an earlier process that had the same pid.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 100 => continue,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!(
                            "cannot create a scratch directory in {}: {e}",
                            base.display()
                        ),
                    ))
                }
            }
        };
        let janitor = path.canonicalize().and_then(|path| {
            Command::new("/bin/sh")
                .arg("-c")
                .arg(JANITOR_SCRIPT)
                .arg("sh")
                .arg(&path)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .map(|janitor| (path, janitor))
        });
        match janitor {
            Ok((path, janitor)) => Ok(ScratchDir { path, janitor }),
            Err(e) => {
                let _ = fs::remove_dir_all(&path);
                Err(e)
            }
        }
    }

    /// The directory (canonical: no symbolic links).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this process runs as root (it created the directory, so owns it).
    pub(crate) fn created_by_root(&self) -> io::Result<bool> {
        Ok(fs::metadata(&self.path)?.uid() == 0)
    }

    /// Hands the directory over to `user`.
    pub(crate) fn give_to(&self, user: RunAs) -> io::Result<()> {
        std::os::unix::fs::chown(&self.path, Some(user.uid), Some(user.gid))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // End-of-file tells the janitor to remove the directory; wait until it has.
        drop(self.janitor.stdin.take());
        let _ = self.janitor.wait();
    }
}

/// A process that is stopped when this value is dropped or this process exits.
#[derive(Debug)]
pub(crate) struct Guarded {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Guarded {
    /// Starts `program args` in `dir` with stdout and stderr appended to `log`. To stop it,
    /// the guard sends it `stop_signal` (a name such as `TERM`).
    pub(crate) fn spawn(
        program: &Path,
        args: &[OsString],
        stop_signal: &str,
        dir: &Path,
        log: &Path,
        run_as: Option<RunAs>,
    ) -> io::Result<Guarded> {
        let log = OpenOptions::new().create(true).append(true).open(log)?;
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(GUARD_SCRIPT)
            .arg("sh")
            .arg(dir)
            .arg(stop_signal)
            .arg(program)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        if let Some(user) = run_as {
            command.uid(user.uid).gid(user.gid);
        }
        let mut child = command.spawn()?;
        let stdin = child.stdin.take();
        Ok(Guarded { child, stdin })
    }

    /// The process's exit status, if it has exited.
    pub(crate) fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Sends the process `signal` (a name such as `KILL`) instead of its stop signal, and
    /// waits until it has exited.
    pub(crate) fn kill(mut self, signal: &str) {
        if let Some(mut stdin) = self.stdin.take() {
            // Fails only if the guard has already exited, and so has the process.
            let _ = writeln!(stdin, "{signal}");
        }
        // Dropping closes stdin (if the line could not be written, end-of-file sends the
        // stop signal instead) and waits for the guard, which exits once the process has.
    }

    /// Waits at most `timeout` for the process to exit by itself.
    pub(crate) fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // End-of-file tells the guard to stop the process; it exits once the process has.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// How often startup and shutdown are polled.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Calls `check` every [`POLL_INTERVAL`] until it returns a value, for at most `timeout`.
/// A failed check counts as "not yet"; the timeout error names `what` was awaited and the
/// last failure, if any.
pub(crate) fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> io::Result<Option<T>>,
) -> io::Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() >= deadline {
            let why = last_error.map_or_else(String::new, |e| format!(" (last error: {e})"));
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{what} took more than {} s{why}", timeout.as_secs()),
            ));
        }
        sleep(POLL_INTERVAL);
    }
}

/// The lowest port [`free_port`] picks.
const LOWEST_PORT: u16 = 20_000;

/// A TCP port on 127.0.0.1 that nothing listens on right now.
///
/// Prefers ports below the kernel's ephemeral range, so that while a server is stopped
/// the kernel never hands its port to an outgoing connection (a client reconnecting to it,
/// say), which would keep the server from starting again on the same port.
pub(crate) fn free_port() -> io::Result<u16> {
    let ephemeral_start = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if let Some(span) = ephemeral_start
        .checked_sub(LOWEST_PORT)
        .filter(|&s| s >= 1000)
    {
        let random = RandomState::new();
        for attempt in 0..32_u32 {
            let mut hasher = random.build_hasher();
            hasher.write_u32(attempt);
            let offset = u16::try_from(hasher.finish() % u64::from(span)).unwrap_or(0);
            let port = LOWEST_PORT + offset;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// Where to look for programs: the directories on `PATH`.
pub(crate) fn path_dirs() -> Vec<PathBuf> {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default()
}

/// Whether `path` is an executable file (following symbolic links).
pub(crate) fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The size of the file at `path` (0 if it does not exist).
pub(crate) fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The text of the file at `path` from byte `offset` on (a note if it cannot be read).
pub(crate) fn read_from(path: &Path, offset: u64) -> String {
    let mut text = Vec::new();
    let read = fs::File::open(path).and_then(|mut file| {
        io::Seek::seek(&mut file, io::SeekFrom::Start(offset))?;
        file.read_to_end(&mut text)
    });
    match read {
        Ok(_) => String::from_utf8_lossy(&text).into_owned(),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
