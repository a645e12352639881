//! The fault group of the conformance suite: what a store must do when the network between
//! it and its server misbehaves.
//!
//! A store's test file runs it with [`fault_tests!`](crate::fault_tests), giving a
//! constructor of [`FaultyStore`]s: a store whose connections go through a fault injector
//! (the testkit's `FaultProxy`), plus a second store on the same server that talks to it
//! directly, to observe what the server holds.

use std::sync::Arc;
use std::time::Duration;

use crate::LockStore;

/// Network faults a test can inject between a store and its server. Each call replaces the
/// previous fault; [`heal`](Self::heal) ends them all.
pub trait FaultInjector: Send + Sync {
    /// Forwards everything again, at once, in both directions.
    fn heal(&self);
    /// Delays everything sent to the server by `to_server` and everything sent back by
    /// `to_client` (order is kept); connections stay up.
    fn set_latency(&self, to_server: Duration, to_client: Duration);
    /// Keeps connections open and accepts new ones, but forwards nothing in either
    /// direction until healed (what was sent meanwhile is delivered then, as TCP would
    /// after a partition).
    fn blackhole(&self);
    /// Closes every open connection at once (both sides see a reset or an end of stream);
    /// new connections are accepted.
    fn cut(&self);
    /// Closes every new connection as soon as it is made; open ones keep working.
    fn refuse(&self);
}

/// What a case of the fault group works on.
pub struct FaultyStore {
    /// The store under test: its connections go through `faults`.
    pub store: Arc<dyn LockStore>,
    /// A store on the same server and table, connected directly (no faults): the observer.
    pub direct: Arc<dyn LockStore>,
    /// The injector between `store` and its server.
    pub faults: Arc<dyn FaultInjector>,
    /// The store's command timeout: the longest any operation of `store` may take.
    pub command_timeout: Duration,
}
