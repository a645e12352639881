//! A key and an owner token in one allocation: each lock keeps its own so (the common
//! pattern makes a lock per acquisition), and the memory store keeps each hold so; on that
//! store every allocation of the cycle shows.

use crate::owner::{push_new_owner_token, OWNER_TOKEN_LEN};

/// A key and the owner token of its holder, in one allocation (the key, then the token):
/// how a lock keeps them, and how a store may keep a hold. Its `Debug` hides the token.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyAndOwner {
    text: Box<str>,
    /// Where the key ends and the owner token starts.
    key_len: usize,
}

impl KeyAndOwner {
    /// `key` with a new owner token.
    pub(crate) fn with_new_owner(key: &str) -> Self {
        let mut text = String::with_capacity(key.len() + OWNER_TOKEN_LEN);
        text.push_str(key);
        push_new_owner_token(&mut text);
        Self::from_text(text, key.len())
    }

    /// `key` held by `owner`.
    pub fn new(key: &str, owner: &str) -> Self {
        let mut text = String::with_capacity(key.len() + owner.len());
        text.push_str(key);
        text.push_str(owner);
        Self::from_text(text, key.len())
    }

    fn from_text(text: String, key_len: usize) -> Self {
        Self {
            text: text.into_boxed_str(),
            key_len,
        }
    }

    /// The key.
    pub fn key(&self) -> &str {
        self.text.get(..self.key_len).unwrap_or_default()
    }

    /// The owner token.
    pub fn owner(&self) -> &str {
        self.text.get(self.key_len..).unwrap_or_default()
    }
}

impl std::fmt::Debug for KeyAndOwner {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KeyAndOwner")
            .field("key", &self.key())
            .field("owner", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_and_the_owner_come_back_apart() {
        let restored = KeyAndOwner::new("invoice:42", "some-owner");
        assert_eq!(restored.key(), "invoice:42");
        assert_eq!(restored.owner(), "some-owner");

        let made = KeyAndOwner::with_new_owner("k\u{e9}y");
        assert_eq!(made.key(), "k\u{e9}y");
        assert_eq!(made.owner().len(), OWNER_TOKEN_LEN);
        assert!(made.owner().chars().all(|c| c.is_ascii_hexdigit()));
        let other = KeyAndOwner::with_new_owner("k\u{e9}y");
        assert_ne!(made.owner(), other.owner());
        assert!(!format!("{made:?}").contains(made.owner()));
    }
}
