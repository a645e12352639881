#![doc = include_str!("../README.md")]

mod channel;
mod config;
mod connector;
mod error;
mod family;
mod hosts;
mod identifier;
mod key;
mod listener;
mod pool;
mod run;
mod schema;
mod shares_sql;
mod sql;
mod store;
mod sweep;
mod tls;
mod unanswered;
#[cfg(feature = "tls")]
mod verify;

pub use config::{
    PostgresConfig, PostgresOptions, DEFAULT_COMMAND_TIMEOUT, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_CREATE_TABLE, DEFAULT_LISTEN, DEFAULT_POOL_SIZE, DEFAULT_POOL_TIMEOUT,
    DEFAULT_SWEEP_INTERVAL, DEFAULT_TABLE, DEFAULT_URL,
};
pub use connector::LISTENER_APPLICATION_NAME;
pub use deadpool_postgres;
pub use deadpool_postgres::tokio_postgres;
pub use key::MAX_KEY_LEN;
pub use store::PostgresStore;
