//! What the made-up stores of these tests share: keys and their owners, in a map. Each test
//! file uses a subset of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Mutex;

use verrou_core::{Acquisition, Grant, OwnerCheck};

/// Keys and their owners: the state of a test store without expiry or fencing tokens.
#[derive(Default)]
pub(crate) struct Owners(Mutex<HashMap<String, String>>);

impl Owners {
    /// Takes `key` for `owner` if nobody holds it.
    pub(crate) fn take(&self, key: &str, owner: &str) -> Acquisition {
        let mut owners = self.0.lock().unwrap();
        if owners.contains_key(key) {
            return Acquisition::Busy;
        }
        owners.insert(key.into(), owner.into());
        Acquisition::Granted(Grant::new())
    }

    /// Frees `key` if `owner` holds it.
    pub(crate) fn release(&self, key: &str, owner: &str) -> OwnerCheck {
        let mut owners = self.0.lock().unwrap();
        if owners.get(key).is_some_and(|held| held == owner) {
            owners.remove(key);
            OwnerCheck::Applied
        } else {
            OwnerCheck::NotOwner
        }
    }

    /// Frees `key` whoever holds it.
    pub(crate) fn remove(&self, key: &str) {
        self.0.lock().unwrap().remove(key);
    }

    /// What an extension of `key` by `owner` answers (nothing expires here): applied if
    /// `owner` holds it.
    pub(crate) fn extend(&self, key: &str, owner: &str) -> OwnerCheck {
        if self
            .0
            .lock()
            .unwrap()
            .get(key)
            .is_some_and(|held| held == owner)
        {
            OwnerCheck::Applied
        } else {
            OwnerCheck::NotOwner
        }
    }

    /// Whether someone holds `key`.
    pub(crate) fn is_held(&self, key: &str) -> bool {
        self.0.lock().unwrap().contains_key(key)
    }
}
