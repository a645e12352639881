#![doc = include_str!("../README.md")]

mod config;
mod error;
mod identifier;
mod pool;
mod run;
mod schema;
mod sql;
mod store;
mod sweep;

pub use config::{PostgresConfig, PostgresOptions};
pub use deadpool_postgres;
pub use deadpool_postgres::tokio_postgres;
pub use store::PostgresStore;
