//! Core of verrou.
pub mod config;
mod duration;
mod error;
mod store;

pub use duration::{parse_duration, IntoDuration, IntoTtl, Ttl};
pub use error::{BoxError, Error, Result};
pub use store::{Acquisition, Grant, LockStore, OwnerCheck};
