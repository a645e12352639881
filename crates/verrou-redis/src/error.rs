//! The error [`RedisStore::connect`](crate::RedisStore::connect) reports when the server
//! cannot be reached.

use fred::error::Error as FredError;

/// The server could not be reached (refused, unknown host, TLS or authentication failure, or
/// no answer within the connect timeout). It is the [`source`](std::error::Error::source) of
/// the [`Error::Storage`](verrou_core::Error::Storage) that
/// [`RedisStore::connect`](crate::RedisStore::connect) returns; its own source is fred's error.
#[derive(Debug, thiserror::Error)]
#[error("could not connect to Redis at {server}")]
pub struct ConnectError {
    server: String,
    #[source]
    source: FredError,
}

impl ConnectError {
    pub(crate) fn new(server: String, source: FredError) -> Self {
        Self { server, source }
    }

    /// The server's URL, without its password.
    pub fn server(&self) -> &str {
        &self.server
    }
}
