//! The Redis ACL rules the README lists for the store, for the tests that check they are
//! enough.

use verrou_redis::fred::prelude::{Client, ClientLike};
use verrou_redis::fred::types::{ClusterHash, CustomCommand, Value};

/// The rules a user of locks needs (the README's list), for keys prefixed `locks:`.
pub(crate) const LOCK_RULES: &[&str] = &[
    "~locks:*",
    "~verrou:fence:*",
    "~verrou:line:*",
    "~verrou:deadline:*",
    "&verrou:released:*",
    "+evalsha",
    "+eval",
    "+exists",
    "+get",
    "+set",
    "+del",
    "+incr",
    "+pexpire",
    "+time",
    "+zadd",
    "+zcard",
    "+zrange",
    "+zrangebyscore",
    "+zrem",
    "+zremrangebyscore",
    "+zscore",
    "+spublish",
    "+ssubscribe",
    "+sunsubscribe",
];

/// Creates the ACL user `name` (password `pw`) with `rules` on the private server of `admin`.
pub(crate) async fn acl_user(admin: &Client, name: &str, rules: &[&str]) {
    let mut arguments = vec!["SETUSER", name, "reset", "on", ">pw"];
    arguments.extend_from_slice(rules);
    let _: Value = admin
        .custom(
            CustomCommand::new_static("ACL", ClusterHash::Random, false),
            arguments,
        )
        .await
        .unwrap();
}
