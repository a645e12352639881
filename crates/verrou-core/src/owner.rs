//! Owner tokens: the secret that proves who holds a lock.

use rand::RngExt;

/// How long a new owner token is: 32 hex digits.
pub(crate) const OWNER_TOKEN_LEN: usize = 32;

/// Appends a new owner token to `text`: 128 bits from the thread-local CSPRNG (ChaCha,
/// seeded and periodically reseeded from the operating system), as
/// [`OWNER_TOKEN_LEN`] lowercase hex digits.
///
/// Whoever knows a lock's owner token can release it, so treat it as a secret.
pub(crate) fn push_new_owner_token(text: &mut String) {
    let bits: u128 = rand::rng().random();
    let mut digits = [0u8; OWNER_TOKEN_LEN];
    for (pair, byte) in digits.chunks_exact_mut(2).zip(bits.to_be_bytes()) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(byte)]);
    }
    // One 32-byte check, where pushing char by char checked capacity and encoded UTF-8 32
    // times.
    text.push_str(std::str::from_utf8(&digits).expect("hex digits are ASCII"));
}

/// A new owner token on its own (see [`push_new_owner_token`]).
#[cfg(any(test, feature = "test-suite"))]
pub(crate) fn new_owner_token() -> String {
    let mut token = String::with_capacity(OWNER_TOKEN_LEN);
    push_new_owner_token(&mut token);
    token
}

/// The two lowercase hex digits of every byte: one load per byte instead of two lookups.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut byte = 0;
    while byte < 256 {
        pairs[byte] = [HEX_DIGITS[byte >> 4], HEX_DIGITS[byte & 0xf]];
        byte += 1;
    }
    pairs
};

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn tokens_are_128_bit_hex_and_distinct() {
        let tokens: HashSet<String> = (0..10_000).map(|_| new_owner_token()).collect();
        assert_eq!(tokens.len(), 10_000);
        for token in &tokens {
            assert_eq!(token.len(), 32);
            assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
        }
    }
}
