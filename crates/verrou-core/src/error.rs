//! The one error type of verrou.

use std::error::Error as StdError;

/// A boxed error from a store's client library, kept as the source of [`Error::Storage`].
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Everything that can go wrong with a lock.
///
/// Acquiring a lock that someone else holds is not an error: `acquire` returns `Ok(false)`.
/// Errors are misuse (bad keys, durations, arguments), ownership violations, and store failures.
///
/// ```
/// use verrou_core::Error;
///
/// fn describe(error: &Error) -> &'static str {
///     match error {
///         Error::NotOwned { .. } => "someone else holds it, or it expired",
///         Error::Storage { .. } => "the store failed; retry later",
///         _ => "a bug in the caller",
///     }
/// }
/// # let _ = describe;
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The lock is not held by this owner: it was never taken, already released, expired,
    /// or taken by someone else.
    #[error(
        "lock `{key}` is not held by this owner (never acquired, released, expired or taken over)"
    )]
    NotOwned {
        /// The lock's key.
        key: String,
    },

    /// The lock was lost while `run` was executing the critical section, so the section may
    /// not have been exclusive.
    #[error("lock `{key}` was lost before the critical section finished; it may not have run exclusively")]
    LockLost {
        /// The lock's key.
        key: String,
    },

    /// A duration could not be understood or is out of range.
    #[error("invalid duration `{input}`: {reason}")]
    InvalidDuration {
        /// The duration as it was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A lock key is not acceptable (for example empty).
    #[error("invalid lock key {key:?}: {reason}")]
    InvalidKey {
        /// The key as it was given.
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An argument makes no sense for this call.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A serialized lock could not be read.
    #[error("invalid serialized lock: {reason}")]
    InvalidSerializedLock {
        /// What is wrong with it.
        reason: String,
    },

    /// The store does not keep this family of holds (semaphores, read-write locks).
    #[error("{store} does not support {family}")]
    Unsupported {
        /// The store's kind, as [`LockStore::name`](crate::LockStore::name) says.
        store: &'static str,
        /// What it was asked to keep.
        family: &'static str,
    },

    /// No store has this name.
    #[error("unknown store `{name}` (configured stores: {known})")]
    UnknownStore {
        /// The name that was asked for.
        name: String,
        /// The configured store names, comma separated.
        known: String,
    },

    /// A configuration is invalid.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A store driver was asked for whose cargo feature is not enabled.
    #[error("store `{store}` uses driver `{driver}`, which needs the cargo feature `{feature}` of the `verrou` crate")]
    FeatureDisabled {
        /// The store's name in the configuration.
        store: String,
        /// The driver name from the configuration.
        driver: String,
        /// The cargo feature to enable.
        feature: &'static str,
    },

    /// The store failed (unreachable server, timeout, protocol error...). The message says
    /// which store, operation and key when a lock made the call; the cause is the
    /// [`source`](StdError::source) of this error.
    #[error("{}", storage_message(store.as_deref(), *operation, key.as_deref()))]
    #[non_exhaustive]
    Storage {
        /// The store's name (in the manager, or given to its factory), when a lock made
        /// the call.
        store: Option<String>,
        /// What was asked: `take`, `release`, `force_release`, `check` or `extend`.
        operation: Option<&'static str>,
        /// The lock's key (shortened when long).
        key: Option<String>,
        /// What the store's client library reported.
        #[source]
        source: BoxError,
    },
}

/// The text of [`Error::Storage`]: `store `redis` failed to take lock `card:1``, or a plain
/// "lock store operation failed" without context.
fn storage_message(store: Option<&str>, operation: Option<&str>, key: Option<&str>) -> String {
    match (store, operation, key) {
        (Some(store), Some(operation), Some(key)) => {
            format!(
                "lock store `{store}` failed to {} lock `{key}`",
                operation.replace('_', " ")
            )
        }
        _ => "lock store operation failed".to_owned(),
    }
}

impl Error {
    /// [`Error::Unsupported`] for `family` on the store named `store`.
    pub(crate) fn unsupported(store: &'static str, family: crate::Family) -> Self {
        Error::Unsupported {
            store,
            family: match family {
                crate::Family::Semaphore => "semaphores",
                crate::Family::RwLock => "read-write locks",
            },
        }
    }

    /// Wraps a store client error as [`Error::Storage`].
    pub fn storage(source: impl Into<BoxError>) -> Self {
        Error::Storage {
            store: None,
            operation: None,
            key: None,
            source: source.into(),
        }
    }

    /// [`Error::InvalidKey`] for `key`, shown whole when short and cut (with its length)
    /// when long, so that an oversized key does not flood a log line.
    pub fn invalid_key(key: &str, reason: impl Into<String>) -> Self {
        Error::InvalidKey {
            key: crate::key::shortened(key),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid_duration(input: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidDuration {
            input: input.into(),
            reason: reason.into(),
        }
    }
}

/// `Result` with verrou's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
