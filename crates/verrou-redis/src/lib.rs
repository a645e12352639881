#![doc = include_str!("../README.md")]

mod config;
mod connection;
mod error;
mod feed;
mod gate;
mod moved_slots;
mod replicas;
mod resend;
mod scripts;
mod sentinel;
mod share_scripts;
mod shares;
mod slots;
mod store;
mod supervise;
mod url;

pub use config::{
    RedisConfig, RedisOptions, DEFAULT_COMMAND_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_SIZE,
    DEFAULT_REPLICA_TIMEOUT, DEFAULT_URL,
};
pub use error::ConnectError;
pub use replicas::NotReplicated;
pub use store::RedisStore;

/// The Redis client this store runs on, for building your own client or pool.
pub use fred;
