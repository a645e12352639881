//! Context for failures while a store is being set up, kept as the source of
//! [`verrou_core::Error::Storage`] so the driver's error stays in the chain below it.

use std::fmt;

use verrou_core::{BoxError, Error};

/// What the store was doing when the server failed it, and why.
#[derive(Debug)]
struct SetupError {
    doing: String,
    source: BoxError,
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.doing)
    }
}

impl std::error::Error for SetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// A storage error saying what the store was doing (e.g. "could not reach PostgreSQL at
/// 127.0.0.1:5432"), caused by `source`.
pub(crate) fn setup_failed(doing: impl Into<String>, source: impl Into<BoxError>) -> Error {
    Error::storage(SetupError {
        doing: doing.into(),
        source: source.into(),
    })
}
