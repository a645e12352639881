//! What makes a lock key acceptable.

use crate::{Error, Result};

/// Checks a lock key: it must not be empty and must not contain a NUL character (which
/// PostgreSQL text cannot hold).
pub(crate) fn validate(key: &str) -> Result<()> {
    let reason = if key.is_empty() {
        "a lock key must not be empty"
    } else if key.contains('\0') {
        "a lock key must not contain a NUL character"
    } else {
        return Ok(());
    };
    Err(Error::InvalidKey {
        key: key.to_owned(),
        reason: reason.into(),
    })
}
