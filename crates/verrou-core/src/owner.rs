//! Owner tokens: the secret that proves who holds a lock.

use rand::RngExt;

/// A new owner token: 128 bits from the thread-local CSPRNG (ChaCha, seeded and periodically
/// reseeded from the operating system), as 32 lowercase hex digits.
///
/// Whoever knows a lock's owner token can release it, so treat it as a secret.
pub(crate) fn new_owner_token() -> String {
    const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";
    let bits: u128 = rand::rng().random();
    let mut token = String::with_capacity(32);
    for byte in bits.to_be_bytes() {
        token.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
        token.push(char::from(HEX_DIGITS[usize::from(byte & 0xf)]));
    }
    token
}

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
