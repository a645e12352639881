//! What several test binaries of the facade share.

use std::time::Duration;

use verrou::{Acquisition, Error, LockStore, OwnerCheck};

/// A store whose server is gone: every call fails with "connection refused".
pub(crate) struct Unreachable;

#[async_trait::async_trait]
impl LockStore for Unreachable {
    async fn save(&self, _: &str, _: &str, _: Option<Duration>) -> verrou::Result<Acquisition> {
        Err(Error::storage("connection refused"))
    }
    async fn delete(&self, _: &str, _: &str) -> verrou::Result<OwnerCheck> {
        Err(Error::storage("connection refused"))
    }
    async fn force_delete(&self, _: &str) -> verrou::Result<()> {
        Err(Error::storage("connection refused"))
    }
    async fn exists(&self, _: &str) -> verrou::Result<bool> {
        Err(Error::storage("connection refused"))
    }
    async fn extend(&self, _: &str, _: &str, _: Duration) -> verrou::Result<OwnerCheck> {
        Err(Error::storage("connection refused"))
    }
}
