//! A TCP proxy on loopback that injects network faults between a client and its server.
//!
//! The proxy runs on a thread of its own with its own single-threaded Tokio runtime, so it
//! outlives the runtimes tests create and drop. Its faults are one [`Faults`] value in a
//! `watch` channel: every task waits on it, so a change reaches idle connections at once.
//!
//! Each direction of a connection is a reader and a writer joined by a bounded queue of
//! chunks. The reader stamps each chunk with the time it is due (read time plus that
//! direction's latency then); the writer delivers chunks in order, each when it is due and
//! nothing while the proxy is a black hole. A black hole also stops the readers, so what a
//! side sends meanwhile waits in the kernel's buffers, as it would behind a partition.

use std::future::poll_fn;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener, TcpStream as StdTcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use verrou_core::conformance::FaultInjector;

/// The most a single read takes from a socket.
const CHUNK_SIZE: usize = 16 * 1024;

/// How many chunks may wait between the reader and the writer of one direction.
const QUEUED_CHUNKS: usize = 16;

/// How long the proxy pauses after a failed accept (say, out of file descriptors).
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

/// A TCP proxy on 127.0.0.1 in front of a server, for injecting network faults in tests:
/// latency, a black hole, cut connections, refused connections. Faults are set through
/// its [`FaultInjector`] implementation; each replaces the one before, and
/// [`heal`](FaultInjector::heal) ends them all.
///
/// It runs on a background thread with a runtime of its own, so it works from synchronous
/// tests and across Tokio runtimes. Dropping it closes its listener and every connection
/// through it.
///
/// ```no_run
/// use verrou_core::conformance::FaultInjector;
/// # fn main() -> std::io::Result<()> {
/// let redis = verrou_testkit::RedisServer::start()?;
/// let (proxy, url) = verrou_testkit::FaultProxy::in_front_of(&redis.url())?;
/// // ... connect a client to `url` ...
/// proxy.blackhole(); // the client's requests now go unanswered
/// proxy.heal(); // and are answered now
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream`, listening on 127.0.0.1 on a free port, forwarding
    /// everything.
    ///
    /// Connections to `upstream` are made when clients connect; one that fails closes the
    /// client's connection.
    pub fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        let listener = StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (admitted, admissions) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            faults: watch::Sender::new(Faults::default()),
            admission: Mutex::new(Admission {
                listener: listener.try_clone()?,
                admitted,
            }),
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let serving = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{}", addr.port()))
            .spawn(move || {
                // The runtime is built, run and dropped on this thread only: dropping a
                // runtime inside another one's task would panic.
                let setup = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .and_then(|runtime| {
                        let listener = {
                            let _context = runtime.enter();
                            TcpListener::from_std(listener)?
                        };
                        Ok((runtime, listener))
                    });
                match setup {
                    Ok((runtime, listener)) => {
                        let _ = ready_tx.send(Ok(()));
                        runtime.block_on(serve(&listener, &serving, admissions, upstream));
                        // Dropping the runtime drops every connection task, closing its
                        // sockets.
                        drop(runtime);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })?;
        let ready = ready_rx
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("the fault proxy's thread died")));
        let mut proxy = FaultProxy {
            addr,
            shared,
            thread: Some(thread),
        };
        match ready {
            Ok(()) => Ok(proxy),
            Err(e) => {
                if let Some(thread) = proxy.thread.take() {
                    let _ = thread.join();
                }
                Err(e)
            }
        }
    }

    /// Starts a proxy to the server named by `url` (`redis://…` or `postgres://…`, with
    /// host 127.0.0.1 or localhost) and returns it with `url` rewritten to go through it:
    /// the same URL with host 127.0.0.1 and the proxy's port. Without a port, the URL
    /// means its scheme's default one (6379 for Redis, 5432 for PostgreSQL).
    ///
    /// Fails with [`io::ErrorKind::InvalidInput`] if `url` is not such a URL.
    pub fn in_front_of(url: &str) -> io::Result<(FaultProxy, String)> {
        let target = UrlTarget::parse(url)?;
        let proxy = FaultProxy::start(SocketAddr::from((Ipv4Addr::LOCALHOST, target.port)))?;
        let rewritten = format!(
            "{}127.0.0.1:{}{}",
            &url[..target.host_start],
            proxy.port(),
            &url[target.host_end..]
        );
        Ok((proxy, rewritten))
    }

    /// The address the proxy listens on (127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port the proxy listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Replaces the current fault with `mode` and the given latencies.
    fn set(&self, mode: Mode, to_server: Duration, to_client: Duration) {
        self.shared.change(|faults| {
            faults.mode = mode;
            faults.to_server = to_server;
            faults.to_client = to_client;
        });
    }
}

impl FaultInjector for FaultProxy {
    /// Forwards everything at once again, in both directions, including what was delayed
    /// or held back; accepts new connections.
    fn heal(&self) {
        self.shared.change(|faults| {
            *faults = Faults {
                heals: faults.heals.wrapping_add(1),
                cuts: faults.cuts,
                ..Faults::default()
            };
        });
    }

    /// Delivers each chunk read from now on after `to_server` (client to server) or
    /// `to_client` (server to client), in order; chunks already read keep their delay.
    fn set_latency(&self, to_server: Duration, to_client: Duration) {
        self.set(Mode::Forward, to_server, to_client);
    }

    /// Stops reading and writing on every connection, and connects new ones to the
    /// server only once healed; nothing is lost.
    fn blackhole(&self) {
        self.set(Mode::Blackhole, Duration::ZERO, Duration::ZERO);
    }

    /// Closes both sides of every open connection (including those the client has made
    /// but the proxy not yet accepted), discarding what they had in flight; then forwards
    /// new connections without delay.
    fn cut(&self) {
        self.shared.change(|faults| {
            faults.mode = Mode::Forward;
            faults.to_server = Duration::ZERO;
            faults.to_client = Duration::ZERO;
            faults.cuts = faults.cuts.wrapping_add(1);
        });
    }

    /// Closes both sides of every open connection, as [`cut`](Self::cut) does, and every
    /// connection made from now on as soon as it is accepted, until healed: the server
    /// looks down.
    fn refuse(&self) {
        self.shared.change(|faults| {
            faults.mode = Mode::Refuse;
            faults.to_server = Duration::ZERO;
            faults.to_client = Duration::ZERO;
            faults.cuts = faults.cuts.wrapping_add(1);
        });
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared
            .faults
            .send_modify(|faults| faults.stopped = true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the proxy's handle and its thread share.
#[derive(Debug)]
struct Shared {
    /// The faults now; every task watches them.
    faults: watch::Sender<Faults>,
    /// Locked while admitting connections and while changing faults.
    admission: Mutex<Admission>,
}

/// Taking connections off the listen queue.
///
/// A connection is established once the kernel has completed its handshake, before the
/// proxy accepts it. So that it meets the faults of the time it was made, not those of
/// the time it is accepted, every change of faults first admits the connections waiting
/// in the queue under the faults it replaces.
#[derive(Debug)]
struct Admission {
    /// The listening socket (another descriptor of it).
    listener: StdTcpListener,
    /// Admitted connections, with the cut count they were admitted under, to be served.
    admitted: mpsc::UnboundedSender<(StdTcpStream, u64)>,
}

impl Shared {
    /// Admits the waiting connections, then changes the faults.
    fn change(&self, change: impl FnOnce(&mut Faults)) {
        let admission = self.lock_admission();
        // A failure to accept leaves a connection in the queue, to meet the new faults.
        let _ = self.admit_waiting(&admission);
        self.faults.send_modify(change);
    }

    /// Accepts every connection waiting in the listen queue, closing each at once if the
    /// proxy refuses connections now and passing it on to be served otherwise. Fails if
    /// an accept fails for another reason than an empty queue.
    fn admit_waiting(&self, admission: &Admission) -> io::Result<()> {
        loop {
            match admission.listener.accept() {
                Ok((client, _)) => {
                    let faults = *self.faults.borrow();
                    // A refused connection is closed by dropping it; so is one the
                    // proxy, stopping, no longer serves.
                    if faults.mode != Mode::Refuse {
                        let _ = admission.admitted.send((client, faults.cuts));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Accepts a connection on `listener` (the proxy's thread's descriptor of the listening
    /// socket) when one comes, and admits it: `None` if it is refused (and closed),
    /// otherwise the connection and the cut count it is admitted under. Holds the lock
    /// only while polling, never across an await.
    fn poll_admit(
        &self,
        listener: &TcpListener,
        context: &mut Context<'_>,
    ) -> Poll<io::Result<Option<(TcpStream, u64)>>> {
        let _admission = self.lock_admission();
        let (client, _) = ready!(listener.poll_accept(context))?;
        let faults = *self.faults.borrow();
        Poll::Ready(Ok(
            (faults.mode != Mode::Refuse).then_some((client, faults.cuts))
        ))
    }

    /// The admission lock. A panic while it was held leaves nothing half done.
    fn lock_admission(&self) -> MutexGuard<'_, Admission> {
        self.admission
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What the proxy does to traffic now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Mode {
    /// Forwards, after the latencies.
    #[default]
    Forward,
    /// Forwards nothing, and connects new connections upstream only once this ends.
    Blackhole,
    /// Forwards open connections; closes new ones.
    Refuse,
}

/// The proxy's faults, shared with all its tasks.
#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    mode: Mode,
    /// The delay of chunks from the client to the server.
    to_server: Duration,
    /// The delay of chunks from the server to the client.
    to_client: Duration,
    /// How many times the proxy was healed: chunks read before a heal are due at once.
    heals: u64,
    /// How many times connections were cut: those accepted before a cut are closed.
    cuts: u64,
    /// Set when the proxy is dropped.
    stopped: bool,
}

/// Which way a chunk goes.
#[derive(Debug, Clone, Copy)]
enum Direction {
    ToServer,
    ToClient,
}

impl Faults {
    /// The latency of `direction`.
    fn latency(&self, direction: Direction) -> Duration {
        match direction {
            Direction::ToServer => self.to_server,
            Direction::ToClient => self.to_client,
        }
    }
}

/// Admits connections as they come and serves them, until the proxy is dropped.
async fn serve(
    listener: &TcpListener,
    shared: &Shared,
    mut admissions: mpsc::UnboundedReceiver<(StdTcpStream, u64)>,
    upstream: SocketAddr,
) {
    let mut faults = shared.faults.subscribe();
    loop {
        tokio::select! {
            // An error means the proxy is gone too.
            _ = faults.wait_for(|faults| faults.stopped) => return,
            accepted = poll_fn(|context| shared.poll_admit(listener, context)) => match accepted {
                Ok(Some((client, cuts))) => {
                    tokio::spawn(relay(client, upstream, shared.faults.subscribe(), cuts));
                }
                Ok(None) => {}
                // Out of file descriptors, say: try again a little later.
                Err(_) => tokio::time::sleep(ACCEPT_RETRY).await,
            },
            Some((client, cuts)) = admissions.recv() => {
                let client = client
                    .set_nonblocking(true)
                    .and_then(|()| TcpStream::from_std(client));
                if let Ok(client) = client {
                    tokio::spawn(relay(client, upstream, shared.faults.subscribe(), cuts));
                }
            }
        }
    }
}

/// Forwards one connection until either side closes it, an error, or a cut after cut
/// number `cuts`.
async fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    faults: watch::Receiver<Faults>,
    cuts: u64,
) {
    let mut watch_cut = faults.clone();
    let cut = async move {
        let _ = watch_cut.wait_for(|faults| faults.cuts != cuts).await;
    };
    tokio::select! {
        _ = cut => {}
        _ = forward(client, upstream, faults) => {}
    }
}

/// Connects to `upstream` once the proxy is not a black hole, then forwards both ways.
async fn forward(
    client: TcpStream,
    upstream: SocketAddr,
    mut faults: watch::Receiver<Faults>,
) -> io::Result<()> {
    faults
        .wait_for(|faults| faults.mode != Mode::Blackhole)
        .await
        .map_err(stopped)?;
    let server = TcpStream::connect(upstream).await?;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::try_join!(
        pipe(
            client_read,
            server_write,
            Direction::ToServer,
            faults.clone()
        ),
        pipe(server_read, client_write, Direction::ToClient, faults),
    )?;
    Ok(())
}

/// A chunk read from one side, on its way to the other.
#[derive(Debug)]
struct Chunk {
    data: Vec<u8>,
    /// When it may be written.
    due: Instant,
    /// The heal count when it was read.
    heals: u64,
}

/// Copies `from` to `to` in chunks, each delayed by the latency of `direction` when it
/// was read, until `from` ends; then shuts `to` down for writing.
async fn pipe(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    direction: Direction,
    faults: watch::Receiver<Faults>,
) -> io::Result<()> {
    let (queue, mut queued) = mpsc::channel::<Chunk>(QUEUED_CHUNKS);
    let mut read_faults = faults.clone();
    let read = async move {
        let mut buffer = vec![0; CHUNK_SIZE];
        loop {
            read_faults
                .wait_for(|faults| faults.mode != Mode::Blackhole)
                .await
                .map_err(stopped)?;
            let n = from.read(&mut buffer).await?;
            if n == 0 {
                return Ok(());
            }
            // The faults when the read ended are the ones this chunk meets.
            let faults = *read_faults.borrow();
            let chunk = Chunk {
                data: buffer[..n].to_vec(),
                due: Instant::now() + faults.latency(direction),
                heals: faults.heals,
            };
            if queue.send(chunk).await.is_err() {
                // The writer failed, and says why.
                return Ok(());
            }
        }
    };
    let mut write_faults = faults;
    let write = async move {
        while let Some(chunk) = queued.recv().await {
            until_due(&chunk, &mut write_faults).await?;
            to.write_all(&chunk.data).await?;
        }
        to.shutdown().await
    };
    tokio::try_join!(read, write)?;
    Ok(())
}

/// Waits until `chunk` may be written: the proxy is not a black hole, and the chunk's
/// delay is over or the proxy was healed since it was read.
async fn until_due(chunk: &Chunk, faults: &mut watch::Receiver<Faults>) -> io::Result<()> {
    loop {
        let now = *faults.borrow_and_update();
        if now.mode == Mode::Blackhole {
            faults.changed().await.map_err(stopped)?;
            continue;
        }
        if now.heals != chunk.heals || Instant::now() >= chunk.due {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep_until(chunk.due) => {}
            changed = faults.changed() => changed.map_err(stopped)?,
        }
    }
}

/// The error of a task whose proxy is gone.
fn stopped(_: watch::error::RecvError) -> io::Error {
    io::Error::other("the fault proxy stopped")
}

/// Where in a URL its host and port are, and the port it names.
#[derive(Debug)]
struct UrlTarget {
    /// The byte offset of the host.
    host_start: usize,
    /// The byte offset just past the port (or the host, without a port).
    host_end: usize,
    port: u16,
}

impl UrlTarget {
    /// Parses `SCHEME://[USERINFO@]HOST[:PORT][/…]` where HOST is 127.0.0.1 or localhost.
    fn parse(url: &str) -> io::Result<UrlTarget> {
        let invalid = |why: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot put a fault proxy in front of {url:?}: {why}"),
            )
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("not a URL (SCHEME://HOST:PORT/…)"))?;
        let default_port =
            match scheme {
                "redis" | "rediss" => 6379,
                "postgres" | "postgresql" => 5432,
                _ => return Err(invalid(
                    "only redis://, rediss://, postgres:// and postgresql:// URLs are supported",
                )),
            };
        let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..authority_len];
        let host_offset = authority.rfind('@').map_or(0, |at| at + 1);
        let host_port = &authority[host_offset..];
        let (host, port) = match host_port.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse()
                    .map_err(|_| invalid("the port is not a number from 0 to 65535"))?,
            ),
            None => (host_port, default_port),
        };
        if host != "127.0.0.1" && !host.eq_ignore_ascii_case("localhost") {
            return Err(invalid("the host must be 127.0.0.1 or localhost"));
        }
        let host_start = scheme.len() + "://".len() + host_offset;
        Ok(UrlTarget {
            host_start,
            host_end: host_start + host_port.len(),
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::UrlTarget;

    /// `url` with its host and port replaced by 127.0.0.1:1, and the port it named.
    fn rewrite(url: &str) -> Option<(String, u16)> {
        let target = UrlTarget::parse(url).ok()?;
        Some((
            format!(
                "{}127.0.0.1:1{}",
                &url[..target.host_start],
                &url[target.host_end..]
            ),
            target.port,
        ))
    }

    #[test]
    fn rewrites_loopback_urls() {
        let cases = [
            ("redis://127.0.0.1:6400", "redis://127.0.0.1:1", 6400),
            ("redis://127.0.0.1:6400/2", "redis://127.0.0.1:1/2", 6400),
            (
                "redis://:secret@localhost:7000",
                "redis://:secret@127.0.0.1:1",
                7000,
            ),
            ("redis://localhost", "redis://127.0.0.1:1", 6379),
            (
                "postgres://postgres@127.0.0.1:30001/postgres",
                "postgres://postgres@127.0.0.1:1/postgres",
                30001,
            ),
            (
                "postgresql://u:p@LOCALHOST/db?sslmode=disable",
                "postgresql://u:p@127.0.0.1:1/db?sslmode=disable",
                5432,
            ),
        ];
        for (url, rewritten, port) in cases {
            assert_eq!(rewrite(url), Some((rewritten.to_owned(), port)), "{url}");
        }
    }

    #[test]
    fn rejects_other_urls() {
        for url in [
            "",
            "127.0.0.1:6379",
            "http://127.0.0.1:80",
            "redis://example.com:6379",
            "redis://10.0.0.1:6379",
            "redis://[::1]:6379",
            "redis://127.0.0.1:port",
            "redis://127.0.0.1:70000",
            "postgres://user@127.0.0.1:/db",
            "host=127.0.0.1 port=5432",
        ] {
            assert!(UrlTarget::parse(url).is_err(), "{url:?}");
        }
    }
}
