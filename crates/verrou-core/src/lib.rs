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
mod waiting;

pub use duration::{parse_duration, ttl_millis, IntoDuration, IntoTtl, Ttl, MAX_DURATION};
pub use error::{BoxError, Error, Result};
pub use factory::{LockFactory, DEFAULT_TTL};
pub use guard::LockGuard;
pub use key::MAX_KEY_LEN;
pub use lock::Lock;
pub use loss::LossSignal;
pub use retry::{Retry, DEFAULT_RETRY_DELAY};
pub use serialized::{IntoSerializedLock, SerializedLock};
pub use store::{Acquisition, Grant, LockStore, OwnerCheck};
