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

use std::future::Future;
use std::sync::LazyLock;

use fred::bytes_utils::Str;
use fred::error::Error as FredError;
use fred::interfaces::ClientLike;
use fred::types::{CustomCommand, FromValue, Value};

use crate::slots::Slot;

/// Takes `KEYS[1]` for owner `ARGV[1]` if it is free, with a TTL of `ARGV[2]` milliseconds
/// (`0`: none), and issues the grant's fencing token from the slot's counter `KEYS[2]`.
/// Returns `{token, 0}`, the token as decimal text (exact, whatever its size); nil if the key
/// is held by another owner (or holds something other than an owner).
///
/// If the key is already held by `ARGV[1]`, it starts its TTL again (`PEXPIRE`, or
/// `PERSIST` for none), issues a new token the same way, and returns `{token, 1}`: a
/// *renewal*. That is what a take re-sent by the client gets when its first sending was
/// applied and the answer lost with the connection (the client re-sends commands whose
/// connection dropped, and those redirected by Redis Cluster), so that the re-sent take
/// reports the grant instead of "busy". The new token is valid for the hold: it is greater
/// than every token issued before (the one the lost answer carried included), and every
/// later grant's is greater still. (Returning the counter as it is would not do: after the
/// counter was lost, or deleted by hand, it may be missing or below the grant's token.)
///
/// The token is `max(counter, now) + 1`, stored back in the counter, where `now` is the
/// server's time in microseconds (`TIME`): never below the server's clock, so tokens keep
/// growing when the counter is lost (a restart without persistence, a failover to a replica
/// that missed the last increment), and strictly above the counter, which breaks ties
/// between grants of the same microsecond.
///
/// Lua numbers are doubles, and Redis turns them into text lossily in some versions, so
/// `now` is built as text from `TIME`'s two parts and only compared as a number (exact: it
/// is below 2^53 until the year 2255, and a counter too big to be exact is bigger still);
/// the counter is set to that text and raised by `INCR`, and its text is returned, since
/// `INCR`'s reply reaches the script as a double too.
///
/// Everything that can fail comes before the first write, so a failed take changes
/// nothing: the counter is read with `redis.pcall` and must be the text of an integer from
/// 0 to 2^63 - 2 (what this script writes, with room for one more `INCR`); anything else
/// (another type, text that is no such number) is an error reply naming the counter, and
/// the lock key is left alone. The lock key is read with `redis.pcall` too: a key of
/// another type is simply not the owner's, and `SET NX` then finds it taken.
///
/// `redis.replicate_commands()` lets a script write after `TIME` on Redis 3.2 to 4 (since
/// Redis 5 scripts replicate their effects anyway, and it does nothing).
pub(crate) static TAKE: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        r#"if redis.replicate_commands then
  redis.replicate_commands()
end
local time = redis.call("time")
local now = time[1] .. string.format("%06d", tonumber(time[2]))
local counter = redis.pcall("get", KEYS[2])
if type(counter) == "table" then
  return redis.error_reply("ERR verrou: the fencing counter " .. KEYS[2] .. " cannot be read (" .. tostring(counter.err) .. "); was it changed by hand?")
end
if counter and not (counter == "0" or (string.match(counter, "^[1-9]%d*$")
    and (#counter < 19 or (#counter == 19 and counter < "9223372036854775807")))) then
  return redis.error_reply("ERR verrou: the fencing counter " .. KEYS[2] .. " does not hold an integer from 0 to 2^63 - 2; was it changed by hand?")
end
local renewed = redis.pcall("get", KEYS[1]) == ARGV[1]
if renewed then
  if ARGV[2] == "0" then
    redis.call("persist", KEYS[1])
  else
    redis.call("pexpire", KEYS[1], ARGV[2])
  end
else
  local taken
  if ARGV[2] == "0" then
    taken = redis.call("set", KEYS[1], ARGV[1], "NX")
  else
    taken = redis.call("set", KEYS[1], ARGV[1], "NX", "PX", ARGV[2])
  end
  if not taken then
    return false
  end
end
if not counter or tonumber(counter) < tonumber(now) then
  redis.call("set", KEYS[2], now)
end
redis.call("incr", KEYS[2])
return {redis.call("get", KEYS[2]), renewed and 1 or 0}"#,
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
        self.run_with(slot, keys, args, |command, arguments| {
            client.custom(command, arguments)
        })
        .await
    }

    /// Runs the script as [`run`](Self::run) does, each sending going through `send`, given
    /// the command (`EVALSHA` or `EVAL`, to the node that owns `slot`) and its arguments.
    /// Replica acknowledgement sends `WAIT` with it (see [`crate::replicas`]).
    ///
    /// The commands go out as custom commands because fred 10.1 applies per-command options
    /// (the store's timeout and retry policy) to custom commands but not to its own
    /// `evalsha`, and because a custom command is pipelined with the connection's other
    /// commands.
    pub(crate) async fn run_with<T, F, Fut>(
        &self,
        slot: Slot,
        keys: &[&str],
        args: impl Fn(&mut Vec<Value>),
        send: F,
    ) -> Result<T, FredError>
    where
        F: Fn(CustomCommand, Vec<Value>) -> Fut,
        Fut: Future<Output = Result<T, FredError>>,
    {
        let call = |script: &Str| {
            let mut arguments = Vec::with_capacity(2 + keys.len() + 3);
            arguments.push(Value::String(script.clone()));
            arguments.push(Value::Integer(keys.len() as i64));
            arguments.extend(keys.iter().map(|key| Value::from(*key)));
            args(&mut arguments);
            arguments
        };
        let command = |name| CustomCommand::new_static(name, slot.hash(), false);
        match send(command("EVALSHA"), call(&self.sha1)).await {
            Err(error) if error.details().starts_with("NOSCRIPT") => {
                send(command("EVAL"), call(&self.source)).await
            }
            result => result,
        }
    }
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
