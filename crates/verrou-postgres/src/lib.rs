#![doc = include_str!("../README.md")]

mod announce;
mod config;
mod connector;
mod error;
mod hosts;
mod identifier;
mod key;
mod listener;
mod pool;
mod run;
mod schema;
mod sql;
mod store;
mod sweep;
mod watch;

pub use config::{PostgresConfig, PostgresOptions};
pub use connector::LISTENER_APPLICATION_NAME;
pub use deadpool_postgres;
pub use deadpool_postgres::tokio_postgres;
pub use key::MAX_KEY_LEN;
pub use store::PostgresStore;
