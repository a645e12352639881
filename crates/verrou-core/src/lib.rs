//! Core of [verrou](https://docs.rs/verrou): named, expiring, owner-checked locks.
//!
//! This crate holds what every store shares: [`Lock`] and [`LockFactory`] (the API), the
//! [`LockStore`] trait a store implements, durations, retry options, errors, the portable
//! [`SerializedLock`] form and, behind the `test-suite` feature, the
//! [`conformance`] suite every store must pass.
//!
//! Applications usually depend on the `verrou` crate instead, which re-exports all of this
//! with the stores.
//!
//! # Writing a store
//!
//! Implement [`LockStore`] (each method one atomic operation, in one round trip, on the
//! store's clock), then run the conformance suite from your store's tests:
//!
//! ```toml
//! [dev-dependencies]
//! verrou-core = { version = "0.1", features = ["test-suite"] }
//! ```
//!
//! ```ignore
//! // tests/conformance.rs
//! async fn new_store() -> std::sync::Arc<dyn verrou_core::LockStore> {
//!     std::sync::Arc::new(MyStore::connect("...").await.unwrap())
//! }
//! verrou_core::conformance_tests!(new_store);
//! ```
//!
//! The macro writes one `#[test]` per rule. Each test gets fresh stores from `new_store` and
//! uses its own random keys, so the tests can share one server and run in parallel.
//!
//! # Telemetry
//!
//! Locks emit `tracing` spans and events always, and metrics through the
//! [`metrics`](https://docs.rs/metrics) facade with the cargo feature `metrics` (off by
//! default; install any `metrics` recorder, such as a Prometheus exporter).
//!
//! Every metric carries the label `store`: the store's name in the
//! [`Verrou`](https://docs.rs/verrou) manager, or the one given with
//! [`LockFactory::with_name`](crate::LockFactory::with_name) (`default` otherwise).
//!
//! | metric | kind | labels | what |
//! | --- | --- | --- | --- |
//! | `verrou_acquisitions_total` | counter | `store`, `outcome` (`acquired`, `gave_up`, `failed`) | calls of `acquire*` and `run*`, by how they ended |
//! | `verrou_acquire_wait_seconds` | histogram | `store`, `outcome` | how long they took |
//! | `verrou_failed_takes_total` | counter | `store` | takes answered "busy": contention |
//! | `verrou_hold_seconds` | histogram | `store`, `end` (`released`, `expired`) | from grant to release (`expired`: the release found the lock gone) |
//! | `verrou_renewals_total` | counter | `store`, `outcome` (`renewed`, `refused`, `failed`) | extensions, by hand or automatic |
//! | `verrou_locks_lost_total` | counter | `store` | loss signals fired |
//! | `verrou_store_errors_total` | counter | `store`, `operation` (`take`, `release`, `force_release`, `check`, `extend`) | store calls that failed |
//! | `verrou_waiters` | gauge | `store` | `acquire*` calls in progress right now |
//!
//! Spans: `verrou.acquire` (debug level; fields `key`, `store`, and `outcome` once it ended)
//! around each `acquire*`, whose events `lock acquired` / `gave up acquiring lock` carry
//! `wait` and `attempts`; and `verrou.store` (trace level; `store`, `operation`, `key`)
//! around each store call. Errors from the store say which store, operation and key
//! ([`Error::Storage`]). Owner tokens appear only in trace-level events.

mod backoff;
mod clock;
pub mod config;
#[cfg(feature = "test-suite")]
pub mod conformance;
mod duration;
mod error;
mod factory;
mod guard;
mod key;
mod lock;
mod loss;
mod owner;
mod retry;
mod serialized;
mod store;
mod take;
mod telemetry;
pub mod waiting;

pub use backoff::Backoff;
pub use duration::{parse_duration, ttl_millis, IntoDuration, IntoTtl, Ttl, MAX_DURATION};
pub use error::{BoxError, Error, Result};
pub use factory::{LockFactory, RwLock, DEFAULT_TTL};
pub use guard::LockGuard;
pub use key::MAX_KEY_LEN;
pub use lock::{KeyAndOwner, Lock, LockKind};
pub use loss::LossSignal;
pub use retry::{Retry, DEFAULT_RETRY_DELAY};
pub use serialized::{IntoSerializedLock, SerializedKind, SerializedLock};
pub use store::{Acquisition, Family, Grant, ImmediateStore, LockStore, OwnerCheck, Place, Share};
pub use waiting::{Boards, ReleaseFeed, Waiters, WatchedKey, HANDOVER_WINDOW, RECHECK_EVERY};
