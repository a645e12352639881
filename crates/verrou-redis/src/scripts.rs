//! The Lua scripts behind the store's operations. Each runs atomically on the server, so the
//! owner comparison and the change it guards cannot be separated; every key a script touches
//! is in one hash slot, so they run on Redis Cluster too. The lock keeps the layout the
//! Node.js library uses: a string key holding the owner, expiring with a PX TTL.
//!
//! Releasing publishes on the freed key's release channel (a sharded channel in the key's
//! hash slot, see [`crate::slots`]) with `SPUBLISH`, in the same script, so waiters in other
//! processes hear of it within the one round trip. The message is the releasing store's id,
//! so that a store ignores its own releases (it wakes its own waiters directly). It goes through `redis.pcall`: on a
//! server without sharded pub/sub (before Redis 7), or for a user whose ACL forbids the
//! channel, the release still happens and waiters learn of it by polling.

use std::sync::LazyLock;

use fred::bytes_utils::Str;
use fred::error::Error as FredError;
use fred::interfaces::ClientLike;
use fred::types::{CustomCommand, FromValue, Value};

use crate::slots::Slot;

/// Takes `KEYS[1]` for owner `ARGV[1]` if it is free, with a TTL of `ARGV[2]` milliseconds
/// (`0`: none), and then increments the fencing counter `KEYS[2]`. Returns the counter's new
/// value (the fencing token), or nil if the key is held.
pub(crate) static TAKE: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        r#"local taken
if ARGV[2] == "0" then
  taken = redis.call("set", KEYS[1], ARGV[1], "NX")
else
  taken = redis.call("set", KEYS[1], ARGV[1], "NX", "PX", ARGV[2])
end
if taken then
  return redis.call("incr", KEYS[2])
end
return false"#,
    )
});

/// Deletes `KEYS[1]` if its value is `ARGV[1]` (the owner), then publishes `ARGV[3]` (the
/// releasing store's id) on the release channel `ARGV[2]`. Returns 0 if it was not the
/// owner's, else 1 + the number of subscribers the release reached.
pub(crate) static DELETE_IF_OWNER: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        r#"if redis.call("get", KEYS[1]) == ARGV[1] then
  redis.call("del", KEYS[1])
  local heard = redis.pcall("spublish", ARGV[2], ARGV[3])
  if type(heard) == "number" then
    return 1 + heard
  end
  return 1
end
return 0"#,
    )
});

/// Deletes `KEYS[1]` whoever holds it and, if it existed, publishes `ARGV[2]` (the releasing
/// store's id) on the release channel `ARGV[1]`. Returns the number of keys deleted.
pub(crate) static FORCE_DELETE: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        r#"local deleted = redis.call("del", KEYS[1])
if deleted == 1 then
  redis.pcall("spublish", ARGV[1], ARGV[2])
end
return deleted"#,
    )
});

/// Sets the TTL of `KEYS[1]` to `ARGV[2]` milliseconds if its value is `ARGV[1]` (the owner).
/// Returns 1 if it did, else 0.
pub(crate) static EXTEND_IF_OWNER: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        r#"if redis.call("get", KEYS[1]) == ARGV[1] then
  return redis.call("pexpire", KEYS[1], ARGV[2])
end
return 0"#,
    )
});

/// A Lua script and its SHA-1, the name it has in the server's script cache.
pub(crate) struct LuaScript {
    source: Str,
    sha1: Str,
}

impl LuaScript {
    fn new(source: &'static str) -> Self {
        Self {
            source: Str::from_static(source),
            sha1: Str::from(fred::util::sha1_hash(source)),
        }
    }

    /// Runs the script on `keys` (all in `slot`) and the arguments `args` pushes: one
    /// `EVALSHA` round trip while the server has the script cached. When it does not
    /// (`NOSCRIPT`: restarted, failed over, `SCRIPT FLUSH`), `EVALSHA` did nothing, so the
    /// script is sent again in full with `EVAL`, which also puts it back in the cache of the
    /// node that owns the slot.
    pub(crate) async fn run<R: FromValue>(
        &self,
        client: &impl ClientLike,
        slot: Slot,
        keys: &[&str],
        args: impl Fn(&mut Vec<Value>),
    ) -> Result<R, FredError> {
        let call = |script: &Str| {
            let mut arguments = Vec::with_capacity(2 + keys.len() + 3);
            arguments.push(Value::String(script.clone()));
            arguments.push(Value::Integer(keys.len() as i64));
            arguments.extend(keys.iter().map(|key| Value::from(*key)));
            args(&mut arguments);
            arguments
        };
        match eval(client, "EVALSHA", slot, call(&self.sha1)).await {
            Err(error) if error.details().starts_with("NOSCRIPT") => {
                eval(client, "EVAL", slot, call(&self.source)).await
            }
            result => result,
        }
    }
}

/// Sends `command script numkeys keys... args...` (`EVAL` or `EVALSHA`, then `arguments`) to
/// the node that owns `slot`.
///
/// It goes out as a custom command because fred 10.1 applies per-command options (the
/// store's timeout and retry policy) to custom commands but not to its own `evalsha`, and
/// because a custom command is pipelined with the connection's other commands.
async fn eval<R: FromValue>(
    client: &impl ClientLike,
    command: &'static str,
    slot: Slot,
    arguments: Vec<Value>,
) -> Result<R, FredError> {
    let command = CustomCommand::new_static(command, slot.hash(), false);
    client.custom(command, arguments).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_is_the_script_cache_name() {
        let script = LuaScript::new("return 1");
        assert_eq!(script.sha1, "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    }
}
