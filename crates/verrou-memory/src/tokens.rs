//! [`Tokens`]: the fencing tokens of one shard.

/// The next fencing token (and hold generation) of one shard's keys, issued under the
/// shard's mutex: no atomic operation on the way of a take. A key always falls in the same
/// shard, so its tokens grow; the counter starts at the wall clock in nanoseconds (at least
/// 1, so every token is positive), so they keep growing across restarts of the process.
#[derive(Debug)]
pub(crate) struct Tokens {
    next: u64,
}

impl Tokens {
    /// A counter whose first token is `first` (at least 1).
    pub(crate) fn starting_at(first: u64) -> Self {
        Self { next: first.max(1) }
    }

    /// A new token, greater than every one issued before (the counter, starting near
    /// 2^60 in this century, would wrap only after about 2^63 more tokens).
    pub(crate) fn issue(&mut self) -> u64 {
        let token = self.next;
        self.next = self.next.wrapping_add(1);
        token
    }
}
