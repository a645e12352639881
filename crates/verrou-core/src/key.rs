//! What makes a lock key acceptable.

use crate::{Error, LockStore, Result};

/// The longest lock key, in bytes, on any store. A store may accept less (see
/// [`LockStore::validate_key`]): PostgreSQL does, because its primary-key index cannot hold
/// long keys.
pub const MAX_KEY_LEN: usize = 64 * 1024;

/// Checks a lock key: it must not be empty, must not contain a NUL character (which
/// PostgreSQL text cannot hold), must be at most [`MAX_KEY_LEN`] bytes, and must satisfy
/// `store`'s own rules.
pub(crate) fn validate(key: &str, store: &dyn LockStore) -> Result<()> {
    let reason = if key.is_empty() {
        "a lock key must not be empty".to_owned()
    } else if key.contains('\0') {
        "a lock key must not contain a NUL character".to_owned()
    } else if key.len() > MAX_KEY_LEN {
        format!(
            "a lock key must be at most {MAX_KEY_LEN} bytes, this one has {}",
            key.len()
        )
    } else {
        return store.validate_key(key);
    };
    Err(Error::invalid_key(key, reason))
}

/// `key` as an error shows it: whole when short, else its first 64 characters and its
/// length, so that a megabyte key does not end up in a log line.
pub(crate) fn shortened(key: &str) -> String {
    const SHOWN: usize = 64;
    match key.char_indices().nth(SHOWN) {
        None => key.to_owned(),
        Some((cut, _)) => format!("{}… ({} bytes)", &key[..cut], key.len()),
    }
}
