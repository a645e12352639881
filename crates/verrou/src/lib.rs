//! Named, expiring, owner-checked locks for Rust services, over pluggable stores: in-process
//! memory, Redis and PostgreSQL, behind one API. It mirrors the Node.js library
//! [`@verrou/core`](https://verrou.dev) and shares its data layout and serialized form.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> verrou::Result<()> {
//! use verrou::{MemoryStore, Verrou};
//!
//! let verrou = Verrou::builder().store("memory", MemoryStore::new()).build()?;
//! let lock = verrou.create_lock_with_ttl("card:4242", "10s")?;
//! let charged = lock.run(|| async { "charged once" }).await?;
//! assert_eq!(charged, Some("charged once"));
//! # Ok(()) }
//! ```
//!
//! # Cargo features
//!
//! | feature | what it adds |
//! | --- | --- |
//! | `memory` (default) | [`MemoryStore`] and the `memory` config driver |
//! | `redis` | `redis::RedisStore` (on `fred`) and the `redis` config driver |
//! | `postgres` | `postgres::PostgresStore` (on `deadpool-postgres`) and the `postgres` config driver |
//!
//! A configuration that names a driver whose feature is off is rejected with
//! [`Error::FeatureDisabled`], which names the feature.
//!
//! # Where to go next
//!
//! - [`Lock`]: acquire, release, run, extend, serialize.
//! - [`Verrou`] and [`VerrouConfig`]: several stores, built from code or from a config file.
//! - [`LockStore`]: write your own store, and prove it with the conformance suite of
//!   `verrou-core` (feature `test-suite`).
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The examples of the project README, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

mod config;
mod env;
mod manager;

pub use config::{DisabledDriver, MemoryConfig, RetryConfig, StoreConfig, VerrouConfig};
pub use manager::{Verrou, VerrouBuilder};
pub use verrou_core::{
    config as duration_config, parse_duration, waiting, Acquisition, BoxError, Error, Family,
    Grant, IntoDuration, IntoSerializedLock, IntoTtl, Lock, LockFactory, LockGuard, LockKind,
    LockStore, LossSignal, OwnerCheck, Place, ReleaseFeed, Result, Retry, RwLock, SerializedKind,
    SerializedLock, Share, Ttl, Waiters, DEFAULT_RETRY_DELAY, DEFAULT_TTL, HANDOVER_WINDOW,
    MAX_DURATION, MAX_KEY_LEN, RECHECK_EVERY,
};

/// The in-process memory store ([`verrou_memory`]).
#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub mod memory {
    pub use verrou_memory::*;
}

#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub use verrou_memory::MemoryStore;

/// The Redis store ([`verrou_redis`]), with the `fred` client it is built on.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis {
    pub use verrou_redis::*;
}

/// The PostgreSQL store ([`verrou_postgres`]), with the `deadpool_postgres` pool it is built on.
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres {
    pub use verrou_postgres::*;
}
