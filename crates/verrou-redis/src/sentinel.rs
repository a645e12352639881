//! Following Redis Sentinel failovers at once.
//!
//! fred asks the sentinels where the master is only when it (re)connects, and checks with
//! `ROLE` that it reached a master. A failover the sentinels decide while the old master is
//! still up (`SENTINEL FAILOVER`, a master that was slow for a moment, a partition) does not
//! close the clients' connections to it: the store would go on writing to the old master,
//! which still takes writes, until the sentinels demote it some ten seconds later (and close
//! its clients' connections), and every write in between is lost with its demotion: grants
//! given twice, fencing tokens issued twice.
//!
//! So each store on sentinels runs a [`Sentinel`] watcher, on connections of its own:
//!
//! - it **subscribes to `+switch-master`** on every sentinel the configuration names (each
//!   publishes it when it learns of a failover; the one that led it, at once), and asks a
//!   sentinel for the master (`SENTINEL MASTER`: its address and *configuration epoch*)
//!   when it announces a switch, and every sentinel whenever a connection to one of them is
//!   (re)made, since a switch may have been published meanwhile;
//! - it follows the master with the highest configuration epoch named so far: every
//!   failover raises the epoch, so an answer from a sentinel that has not yet learned of
//!   the last failover (they learn from each other within two seconds) names a lower epoch
//!   and is ignored;
//! - it follows the store's clients (the one in each [`Seat`], replacements included): the
//!   server each (re)connected to;
//! - when the master it follows changes, every client on another server is told to
//!   reconnect (fred then asks the sentinels again), and told again every [`RETRY_PERIOD`]
//!   while it lands elsewhere (the sentinel fred asks may not have learned of the failover
//!   yet). Meanwhile the store's operations wait ([`ready`]) instead of writing to the old
//!   master;
//! - when a command is answered `READONLY` (its connection is on a server that became a
//!   replica without closing it), every client reconnects, and the sentinels are asked
//!   again ([`check`]).
//!
//! Nothing here writes: the watcher only moves the store's clients, through fred, to the
//! master the sentinels named, and fred checks that it is one before using it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::clients::Client;
use fred::error::{Error as FredError, ErrorKind};
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::prelude::Options;
use fred::types::config::{Server, ServerConfig};
use fred::types::{Builder, ClientState, ClusterHash, CustomCommand, Message, RespVersion};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::{mpsc, watch};

use crate::config::DEFAULT_COMMAND_TIMEOUT;
use crate::supervise::Seat;

/// The channel on which sentinels announce that a master was replaced.
const SWITCH_CHANNEL: &str = "+switch-master";

/// How often, while the store moves to a new master, the clients that are still (or again)
/// on another server are told to reconnect.
const RETRY_PERIOD: Duration = Duration::from_millis(200);

/// The least timeout an operation that waited for the store to reach a new master is left
/// with.
const MIN_LEFT: Duration = Duration::from_millis(1);

/// The pause before the connection task of a sentinel connection that ended is started
/// again.
const RESTART_PAUSE: Duration = Duration::from_secs(1);

/// How often the watcher looks whether the client in a seat was replaced (see
/// [`crate::supervise`]).
const REPLACEMENT_CHECK: Duration = Duration::from_secs(1);

/// The watcher of one store: dropping it stops its tasks, which close their connections.
#[derive(Debug)]
pub(crate) struct Sentinel {
    /// `Some(master)` while the sentinels named a master that some client of the store is
    /// not connected to yet.
    moving: watch::Receiver<Option<Server>>,
    /// What the watcher's tasks tell the mover.
    events: mpsc::UnboundedSender<Event>,
    /// Whether a `READONLY` was reported and not yet handled (later ones are the same news).
    read_only: Arc<AtomicBool>,
    /// Dropped with the watcher: every task sees it and ends.
    _stop: watch::Sender<()>,
}

/// What the mover hears.
#[derive(Debug)]
enum Event {
    /// A sentinel, asked, named `master`, of configuration epoch `epoch`.
    Named { master: Server, epoch: u64 },
    /// The connection to sentinel `sentinel` was (re)made: every sentinel is asked again.
    SentinelConnected,
    /// The client in seat `seat` of the store (re)connected to `server`.
    Connected { seat: usize, server: Server },
    /// A command of the store was answered `READONLY`.
    ReadOnly,
}

impl Sentinel {
    /// Starts following failovers for the store whose clients are in `seats`, if they reach
    /// Redis through sentinels (`None` if not). Needs a Tokio runtime.
    pub(crate) fn start(seats: &[Arc<Seat>]) -> Option<Self> {
        let template = seats.first()?.client();
        let ServerConfig::Sentinel {
            hosts,
            service_name,
            ..
        } = template.client_config().server
        else {
            return None;
        };
        let (stop, stopped) = watch::channel(());
        let (events, heard) = mpsc::unbounded_channel();
        let (ask, _) = watch::channel(());
        for host in &hosts {
            match sentinel_client(&template, host) {
                Ok(client) => {
                    let listener = Listener {
                        client,
                        service_name: service_name.clone(),
                        events: events.clone(),
                    };
                    tokio::spawn(listener.run(ask.subscribe(), stopped.clone()));
                }
                Err(error) => {
                    tracing::warn!(sentinel = %host, %error, "cannot build a connection to a Redis sentinel; failovers are followed through the others");
                }
            }
        }
        let mut on = Vec::with_capacity(seats.len());
        for (index, seat) in seats.iter().enumerate() {
            let client = seat.client();
            // Listen before looking, so that no connection goes unseen.
            let connections = client.reconnect_rx();
            on.push(client.active_connections().into_iter().next());
            let follower = Follower {
                index,
                seat: Arc::clone(seat),
                client,
                events: events.clone(),
            };
            tokio::spawn(follower.run(connections, stopped.clone()));
        }
        let (moving_tx, moving) = watch::channel(None);
        let read_only = Arc::new(AtomicBool::new(false));
        let mover = Mover {
            seats: seats.to_vec(),
            on,
            forcing: vec![false; seats.len()],
            forced_at: vec![None; seats.len()],
            target: None,
            moving: moving_tx,
            ask,
            read_only: Arc::clone(&read_only),
        };
        tokio::spawn(mover.run(heard, stopped));
        Some(Self {
            moving,
            events,
            read_only,
            _stop: stop,
        })
    }

    /// The master the store is moving to, if it is.
    fn moving_to(&self) -> Option<Server> {
        self.moving.borrow().clone()
    }
}

/// The options for one operation of a store that follows `sentinel` (if any): `options` at
/// once, unless the store is moving to a new master the sentinels named; then, once every
/// client of the store is connected to it, `options` with what is left of their timeout.
/// Fails (a timeout) when they are not within the timeout: the operation is not sent, so
/// that it cannot reach the old master.
pub(crate) async fn ready<'o>(
    sentinel: Option<&Sentinel>,
    options: &'o Options,
) -> Result<Cow<'o, Options>, FredError> {
    let Some(sentinel) = sentinel.filter(|sentinel| sentinel.moving.borrow().is_some()) else {
        return Ok(Cow::Borrowed(options));
    };
    let started = Instant::now();
    let patience = options.timeout.unwrap_or(DEFAULT_COMMAND_TIMEOUT);
    let mut moving = sentinel.moving.clone();
    if tokio::time::timeout(patience, moving.wait_for(Option::is_none))
        .await
        .is_err()
    {
        let master = sentinel
            .moving_to()
            .map_or_else(|| "?".to_owned(), |master| master.to_string());
        return Err(FredError::new(
            ErrorKind::Timeout,
            format!("the Redis sentinels named a new master, {master}, and the store did not reach it within {patience:?}; the command was not sent"),
        ));
    }
    let mut options = Cow::Borrowed(options);
    options.to_mut().timeout = Some(patience.saturating_sub(started.elapsed()).max(MIN_LEFT));
    Ok(options)
}

/// Tells `sentinel` (if any) how an operation went: a command answered `READONLY` was
/// written to a server that is now a replica, so the store's clients reconnect (fred asks
/// the sentinels, and refuses a server that is not a master) and the sentinels are asked
/// again.
pub(crate) fn check<R>(sentinel: Option<&Sentinel>, result: &Result<R, FredError>) {
    if let (Some(sentinel), Err(error)) = (sentinel, result) {
        if error.details().starts_with("READONLY")
            && !sentinel.read_only.swap(true, Ordering::AcqRel)
        {
            // Fails only when the watcher is gone with the store.
            let _ = sentinel.events.send(Event::ReadOnly);
        }
    }
}

/// A client of the sentinel `host`, configured like `template` (credentials, TLS, timeouts),
/// reconnecting forever, on RESP3 so that it can ask while subscribed.
fn sentinel_client(template: &Client, host: &Server) -> Result<Client, FredError> {
    let mut config = template.client_config();
    config.server = ServerConfig::Centralized {
        server: host.clone(),
    };
    // Sentinels have no databases.
    config.database = None;
    config.version = RespVersion::RESP3;
    config.fail_fast = true;
    let mut builder = Builder::from_config(config);
    builder
        .set_connection_config(template.connection_config().clone())
        .set_policy(crate::config::reconnect_policy());
    builder.build()
}

/// The connection to one sentinel: subscribes to `+switch-master` on every (re)connection,
/// and reports what it hears and what the sentinel names when asked.
struct Listener {
    client: Client,
    service_name: String,
    events: mpsc::UnboundedSender<Event>,
}

impl Listener {
    /// Connects, then listens and answers `ask` until `stop` ends; closes the connection.
    /// A connection task that ends (fred gives up on it after some errors) is started again
    /// after [`RESTART_PAUSE`].
    async fn run(self, mut ask: watch::Receiver<()>, mut stop: watch::Receiver<()>) {
        // Listen before connecting, so that neither the first connection nor a message is
        // missed.
        let mut messages = self.client.message_rx();
        let mut connections = self.client.reconnect_rx();
        let mut connection = self.client.connect();
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                ended = &mut connection => {
                    tracing::debug!(sentinel = %self.server(), outcome = ?ended, "the connection task of a Redis sentinel ended; starting it again");
                    tokio::select! {
                        _ = stop.changed() => break,
                        () = tokio::time::sleep(RESTART_PAUSE) => {}
                    }
                    connection = self.client.connect();
                }
                connected = connections.recv() => match connected {
                    Ok(_) | Err(RecvError::Lagged(_)) => self.subscribe().await,
                    Err(RecvError::Closed) => break,
                },
                message = messages.recv() => match message {
                    Ok(message) if self.is_switch(&message) => {
                        tracing::info!(sentinel = %self.server(), announcement = ?message.value.as_string(), "a Redis sentinel announced a failover");
                        self.ask().await;
                    }
                    Ok(_) => {}
                    // A switch may have been among the messages dropped.
                    Err(RecvError::Lagged(_)) => self.ask().await,
                    Err(RecvError::Closed) => break,
                },
                asked = ask.changed() => match asked {
                    Ok(()) => self.ask().await,
                    Err(_) => break,
                },
            }
        }
        // Nothing to do if it fails: the connection is unusable either way.
        let _ = self.client.quit().await;
    }

    /// Subscribes to switches on the new connection, then has every sentinel asked: a
    /// switch published while this connection was down was not heard.
    async fn subscribe(&self) {
        match self.client.subscribe(SWITCH_CHANNEL).await {
            Ok(()) => {
                // Fails only when the mover is gone with the store.
                let _ = self.events.send(Event::SentinelConnected);
            }
            Err(error) => {
                tracing::debug!(sentinel = %self.server(), %error, "could not subscribe to a sentinel's failover announcements");
            }
        }
    }

    /// Whether `message` is a `+switch-master` of the store's master (`name old-ip old-port
    /// new-ip new-port`).
    fn is_switch(&self, message: &Message) -> bool {
        message.channel == SWITCH_CHANNEL
            && message.value.as_string().is_some_and(|text| {
                text.split_whitespace().next() == Some(self.service_name.as_str())
            })
    }

    /// Asks the sentinel for the master (`SENTINEL MASTER`), and reports its address and
    /// configuration epoch.
    async fn ask(&self) {
        let command = CustomCommand::new_static("SENTINEL", ClusterHash::FirstKey, false);
        let options = Options {
            timeout: Some(self.client.connection_config().internal_command_timeout),
            ..Options::default()
        };
        let reply: Result<HashMap<String, String>, FredError> = self
            .client
            .with_options(&options)
            .custom(command, vec!["MASTER", self.service_name.as_str()])
            .await;
        let named = reply.map(|fields| {
            let field = |name: &str| fields.get(name);
            let port: u16 = field("port")?.parse().ok()?;
            let epoch: u64 = field("config-epoch")?.parse().ok()?;
            Some((field("ip")?.clone(), port, epoch))
        });
        match named {
            Ok(Some((host, port, epoch))) => {
                // Fails only when the mover is gone with the store.
                let _ = self.events.send(Event::Named {
                    master: Server::new(host, port),
                    epoch,
                });
            }
            Ok(None) => {
                tracing::warn!(sentinel = %self.server(), "a Redis sentinel's SENTINEL MASTER reply lacks the address or epoch");
            }
            Err(error) => {
                tracing::debug!(sentinel = %self.server(), service = %self.service_name, %error, "a Redis sentinel did not say where the master is");
            }
        }
    }

    /// The sentinel's address, for messages.
    fn server(&self) -> String {
        match &self.client.client_config().server {
            ServerConfig::Centralized { server } => server.to_string(),
            _ => String::new(),
        }
    }
}

/// Follows the client in one seat of the store.
struct Follower {
    index: usize,
    seat: Arc<Seat>,
    /// The client followed: the one in the seat when last looked.
    client: Client,
    events: mpsc::UnboundedSender<Event>,
}

impl Follower {
    /// Reports each (re)connection of the client followed (`connections`), and where the
    /// seat's client is when it was replaced, until `stop` ends.
    async fn run(
        mut self,
        mut connections: broadcast::Receiver<Server>,
        mut stop: watch::Receiver<()>,
    ) {
        let mut replacements = tokio::time::interval(REPLACEMENT_CHECK);
        replacements.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let server = tokio::select! {
                _ = stop.changed() => break,
                connected = connections.recv() => match connected {
                    Ok(server) => Some(server),
                    // Where it is now is all that matters.
                    Err(RecvError::Lagged(_)) => self.server(),
                    // Closed by `quit`: the store is closing.
                    Err(RecvError::Closed) => break,
                },
                _ = replacements.tick() => {
                    let current = self.seat.client();
                    if current.id() == self.client.id() {
                        continue;
                    }
                    self.client = current;
                    // Listen before looking, so that no connection goes unseen.
                    connections = self.client.reconnect_rx();
                    self.server()
                }
            };
            let Some(server) = server else {
                continue;
            };
            let connected = Event::Connected {
                seat: self.index,
                server,
            };
            if self.events.send(connected).is_err() {
                break;
            }
        }
    }

    /// The server the client followed is connected to, if it is.
    fn server(&self) -> Option<Server> {
        if self.client.is_connected() {
            self.client.active_connections().into_iter().next()
        } else {
            None
        }
    }
}

/// The watcher's state, on one task: where the sentinels say the master is, where each
/// client of the store is, and which ones it told to reconnect.
struct Mover {
    seats: Vec<Arc<Seat>>,
    /// The server each client last connected to.
    on: Vec<Option<Server>>,
    /// The clients told to reconnect, until they have.
    forcing: Vec<bool>,
    /// When each client was last told to reconnect.
    forced_at: Vec<Option<Instant>>,
    /// The master the store follows, and its configuration epoch: the highest named so far
    /// (of one epoch, the last named).
    target: Option<(Server, u64)>,
    /// `Some(master)` while a client is on another server: operations wait.
    moving: watch::Sender<Option<Server>>,
    /// Changed to have every sentinel asked for the master.
    ask: watch::Sender<()>,
    /// Set while a `READONLY` waits to be handled.
    read_only: Arc<AtomicBool>,
}

impl Mover {
    /// Handles events until `stop` ends or every sender is gone.
    async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<Event>,
        mut stop: watch::Receiver<()>,
    ) {
        let mut retry = tokio::time::interval(RETRY_PERIOD);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                event = events.recv() => match event {
                    Some(event) => self.handle(event),
                    None => break,
                },
                _ = retry.tick(), if self.moving.borrow().is_some() => self.move_strays(),
            }
        }
        // Nobody waits any more.
        self.moving.send_replace(None);
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Named { master, epoch } => {
                let newer = self.target.as_ref().is_none_or(|(followed, known)| {
                    epoch > *known || (epoch == *known && master != *followed)
                });
                if newer {
                    if self.target.is_some() {
                        tracing::info!(%master, epoch, "the Redis sentinels name a new master");
                    }
                    self.target = Some((master, epoch));
                    self.move_strays();
                }
            }
            Event::SentinelConnected => {
                self.ask.send_replace(());
            }
            Event::Connected { seat, server } => {
                self.forcing[seat] = false;
                let elsewhere = self
                    .target
                    .as_ref()
                    .is_some_and(|(target, _)| *target != server);
                self.on[seat] = Some(server);
                if elsewhere && self.moving.borrow().is_none() {
                    // fred reconnected by itself and found another master than the one
                    // followed: maybe a failover went unheard.
                    self.ask.send_replace(());
                }
                self.move_strays();
            }
            Event::ReadOnly => {
                tracing::warn!("a Redis command was answered READONLY: a connection of the store is on a replica; reconnecting");
                self.read_only.store(false, Ordering::Release);
                for index in 0..self.seats.len() {
                    self.reconnect(index);
                }
                self.ask.send_replace(());
            }
        }
    }

    /// Tells every client connected to another server than the master followed to
    /// reconnect (unless told less than [`RETRY_PERIOD`] ago, or reconnecting), and lets
    /// operations through only when none is. A client that never connected is no stray: fred
    /// asks the sentinels when it connects, and operations wait for it anyway.
    fn move_strays(&mut self) {
        let Some((target, _)) = self.target.clone() else {
            return;
        };
        let mut strays = false;
        for index in 0..self.seats.len() {
            if self.on[index].as_ref().is_some_and(|on| *on != target) {
                strays = true;
                self.reconnect(index);
            }
        }
        let moving = strays.then_some(target);
        if *self.moving.borrow() != moving {
            match &moving {
                Some(master) => {
                    tracing::info!(%master, "the Redis store moves to the master the sentinels named; operations wait");
                }
                None => tracing::info!("the Redis store is on the master the sentinels named"),
            }
            self.moving.send_replace(moving);
        }
    }

    /// Tells client `index` to reconnect, unless it was told less than [`RETRY_PERIOD`] ago
    /// or has not reconnected since, or is reconnecting by itself (it reports where it
    /// lands).
    fn reconnect(&mut self, index: usize) {
        let client = self.seats[index].client();
        let recently = self.forced_at[index].is_some_and(|at| at.elapsed() < RETRY_PERIOD);
        if self.forcing[index] || recently || client.state() != ClientState::Connected {
            return;
        }
        self.forcing[index] = true;
        self.forced_at[index] = Some(Instant::now());
        tokio::spawn(async move {
            // It reports its new connection (or keeps trying); nothing else to do.
            let _ = client.force_reconnection().await;
        });
    }
}
