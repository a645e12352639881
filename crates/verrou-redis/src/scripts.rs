//! The Lua scripts behind the store's operations. Each runs atomically on the server, so the
//! owner comparison and the change it guards cannot be separated; every key a script touches
//! is in one hash slot, so they run on Redis Cluster too. The lock keeps the layout the
//! Node.js library uses: a string key holding the owner, expiring with a PX TTL.
//!
//! # The waiting line
//!
//! A waiter's take keeps its *place* in the key's line (two sorted sets, named in
//! [`crate::slots`]: arrivals and deadlines, members the waiters' ids). A take succeeds only
//! if the key is free and no live place is ahead of the taker's; a take without a place
//! succeeds only if the line is empty. Every script that reads the line first drops the
//! places whose deadline has passed. A store in another language joins the line by running
//! these scripts, or by following the same rules on the same keys.
//!
//! A release (owner-checked or forced) of a key with a line **hands it over**: it cuts the
//! front waiter's deadline to at most the hand-over window from now, *reserves* the lock key
//! for it until then (the key holds `verrou:handover:WAITER` with that TTL, so that a take
//! from outside the line — a plain `SET NX PX`, ours or the Node.js library's — finds it
//! busy, and only that waiter's take may replace it), and publishes `:WAITER` (`WAITER` the
//! front waiter's id) on the key's release channel (a sharded channel in the key's hash
//! slot, named after the line: `verrou:line:REST` publishes on `verrou:released:REST`) with
//! `SPUBLISH`, in the same script. Every store that hears it wakes that waiter if it waits
//! there, the releasing store too: the script needs neither the store's id nor the window
//! as arguments (the window is a constant of the scripts, `WINDOW`), which keeps a release
//! two arguments shorter. (`NEXT_TAKER`'s wake-ups name the asking store before the `:`,
//! which ignores them.) Nothing is published when nobody waits. The publication
//! goes through `redis.pcall`: on a server without sharded pub/sub (before Redis 7), or for a
//! user whose ACL forbids the channel, the release still happens and waiters learn of it by
//! polling.
//!
//! Every script that can fail does so before its first write: the fencing counter and the
//! line's keys are read with `redis.pcall` first, and a key of the wrong type (changed by
//! hand) is an error reply naming it.
//!
//! # Slot migrations
//!
//! While Redis Cluster moves a key's hash slot, a node runs a script of several keys only if
//! it has all of them (else it answers `TRYAGAIN`, or `ASK` when it has none), and a script
//! that then touches a key of the slot the node does not have — one the script itself
//! emptied, which Redis deletes — fails there, with what it wrote before kept. The scripts
//! that change a waiting line or a holder set can empty one (the last place leaves, the last
//! places lapse) and touch it again, so they are *guarded*
//! ([`LuaScript::guarded`]): each run also declares the slot's migration guard
//! ([`Slot::guard_key`]), a key nothing ever writes, so no node has all their keys while the
//! slot moves and they wait, resent on `TRYAGAIN`, until it has moved. The others
//! (`EXTEND_IF_OWNER`, and the share scripts that extend and count) run meanwhile, and never
//! touch a key after emptying it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::LazyLock;

use fred::bytes::Bytes;
use fred::bytes_utils::Str;
use fred::error::Error as FredError;
use fred::interfaces::ClientLike;
use fred::types::{CustomCommand, FromValue, Value};

use crate::slots::Slot;

/// `clock()`, the server's time, for the scripts that need it. `redis.replicate_commands()`
/// lets a script write after `TIME` on Redis 3.2 to 4 (since Redis 5 scripts replicate their
/// effects anyway, and it does nothing).
macro_rules! clock_function {
    () => {
        r#"if redis.replicate_commands then
  redis.replicate_commands()
end
-- The server's time: microseconds as exact text, and milliseconds as a number.
local function clock()
  local time = redis.call("time")
  return time[1] .. string.format("%06d", tonumber(time[2])),
    tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
"#
    };
}

/// `line()`, which makes the functions on the key's line, `KEYS[2]` (arrivals) and `KEYS[3]`
/// (deadlines). The scripts define and call it only when a key has a line or the taker has a
/// place: making Lua functions at every call costs more than the rest of a take or release
/// of a key without a line. Numbers are passed to Redis as text made by `text`: Lua numbers
/// are doubles, which some Redis versions turn into text lossily (all the times and deadlines
/// are below 2^53, exact).
macro_rules! line_function {
    () => {
        r#"-- The hand-over window in milliseconds (verrou_core::HANDOVER_WINDOW).
local WINDOW = 100
-- The functions on the line.
local function line()
  local L = {}
  -- The decimal text of an integral number.
  function L.text(number)
    return string.format("%.0f", number)
  end
  -- Reads a line key, failing (before any write) if it is not a sorted set.
  function L.read(command, key, ...)
    local reply = redis.pcall(command, key, ...)
    if type(reply) == "table" and reply.err then
      error(redis.error_reply("ERR verrou: the waiting line key " .. key .. " cannot be read (" .. tostring(reply.err) .. "); was it changed by hand?"))
    end
    return reply
  end
  -- Drops the places that lapsed before now_ms; returns how many are left.
  function L.prune(now_ms)
    if L.read("zcard", KEYS[2]) == 0 then
      return 0
    end
    local cutoff = "(" .. L.text(now_ms)
    local lapsed = L.read("zrangebyscore", KEYS[3], "-inf", cutoff)
    for first = 1, #lapsed, 1000 do
      redis.call("zrem", KEYS[2], unpack(lapsed, first, math.min(first + 999, #lapsed)))
    end
    if #lapsed > 0 then
      redis.call("zremrangebyscore", KEYS[3], "-inf", cutoff)
    end
    return redis.call("zcard", KEYS[2])
  end
  -- Makes both line keys expire with their last place (deletes them if none is left).
  function L.expire(now_ms)
    local last = redis.call("zrange", KEYS[3], -1, -1, "WITHSCORES")
    if #last == 0 then
      redis.call("del", KEYS[2], KEYS[3])
    else
      local ttl = L.text(tonumber(last[2]) - now_ms + 1)
      redis.call("pexpire", KEYS[2], ttl)
      redis.call("pexpire", KEYS[3], ttl)
    end
  end
  -- Keeps the waiter's place until now_ms + lease: at the back if it had none (arrival now,
  -- or just after the last arrival if the clock went back).
  function L.keep(waiter, now, now_ms, lease)
    redis.call("zadd", KEYS[3], L.text(now_ms + tonumber(lease)), waiter)
    if not redis.call("zscore", KEYS[2], waiter) then
      local arrival = now
      local last = redis.call("zrange", KEYS[2], -1, -1, "WITHSCORES")[2]
      if last and tonumber(last) >= tonumber(now) then
        arrival = L.text(tonumber(last) + 1)
      end
      redis.call("zadd", KEYS[2], arrival, waiter)
    end
    L.expire(now_ms)
  end
  -- Removes the waiter's place; whether it had one.
  function L.leave(waiter, now_ms)
    if redis.call("zrem", KEYS[2], waiter) == 0 then
      return false
    end
    redis.call("zrem", KEYS[3], waiter)
    L.expire(now_ms)
    return true
  end
  -- The waiter at the front of the line, or nil.
  function L.front()
    return redis.call("zrange", KEYS[2], 0, 0)[1]
  end
  -- The key's release channel: its line's name (KEYS[2], verrou:line:REST) with
  -- "released" for "line" (verrou:released:REST).
  function L.channel()
    return "verrou:released:" .. string.sub(KEYS[2], 13)
  end
  -- Cuts the front waiter's place to the window and publishes :WAITER on the key's
  -- release channel; returns the waiter, or nil if nobody waits.
  function L.hand_over(now_ms)
    local waiter = L.front()
    if not waiter then
      return nil
    end
    local deadline = now_ms + WINDOW
    local current = tonumber(redis.call("zscore", KEYS[3], waiter))
    if current and current < deadline then
      deadline = current
    end
    redis.call("zadd", KEYS[3], L.text(deadline), waiter)
    L.expire(now_ms)
    redis.pcall("spublish", L.channel(), ":" .. waiter)
    return waiter, deadline
  end
  -- Hands the key over like hand_over (like hand_over_reserved if `reserve`) unless the
  -- front's place lasts no more than the window already (it was handed the key, and has
  -- the window to take it); returns the waiter or nil. A place without deadline (its set
  -- evicted) was not handed yet.
  function L.hand_over_unless_handed(now_ms, reserve)
    local front = L.front()
    if not front then
      return nil
    end
    local deadline = tonumber(redis.call("zscore", KEYS[3], front))
    if deadline == nil or deadline > now_ms + WINDOW then
      if reserve then
        return L.hand_over_reserved(now_ms)
      end
      return L.hand_over(now_ms)
    end
    return nil
  end
  -- Hands the lock key KEYS[1] over like hand_over, reserving it for the waiter for as
  -- long as its place lives (the key holds RESERVED .. waiter, with that TTL); deletes it
  -- if nobody waits. Returns the waiter or nil.
  function L.hand_over_reserved(now_ms)
    local waiter, deadline = L.hand_over(now_ms)
    if waiter then
      redis.call("set", KEYS[1], RESERVED .. waiter, "PX", L.text(deadline - now_ms + 1))
    else
      redis.call("del", KEYS[1])
    end
    return waiter
  end
  return L
end
"#
    };
}

/// `L` and `queued`: the line's functions and how many live places it has, made (and the
/// lapsed places dropped) only if the line `KEYS[2]` exists; needs `line()` and `now_ms`.
macro_rules! queued_line {
    () => {
        r#"local L
local queued = 0
if redis.pcall("zcard", KEYS[2]) ~= 0 then
  L = line()
  queued = L.prune(now_ms)
end
"#
    };
}

/// Reads the fencing counter `KEYS[4]` into `counter` (nil if missing), returning an error
/// reply that names it, before any write, unless it is the text of an integer from 0 to
/// 2^63 - 2 (what `fence_issue!` writes, with room for one more `INCR`). Given `if
/// CONDITION` (Lua text), it reads the counter only when the condition holds: `counter` is
/// `false` otherwise, and `KEYS[4]` need not be the counter.
macro_rules! fence_check {
    () => {
        concat!(
            r#"local counter = redis.pcall("get", KEYS[4])
"#,
            fence_check!(@valid)
        )
    };
    (if $condition:literal) => {
        concat!(
            "local counter = ",
            $condition,
            r#" and redis.pcall("get", KEYS[4])
"#,
            fence_check!(@valid)
        )
    };
    (@valid) => {
        r#"if type(counter) == "table" then
  return redis.error_reply("ERR verrou: the fencing counter " .. KEYS[4] .. " cannot be read (" .. tostring(counter.err) .. "); was it changed by hand?")
end
if counter and not (counter == "0" or (string.match(counter, "^[1-9]%d*$")
    and (#counter < 19 or (#counter == 19 and counter < "9223372036854775807")))) then
  return redis.error_reply("ERR verrou: the fencing counter " .. KEYS[4] .. " does not hold an integer from 0 to 2^63 - 2; was it changed by hand?")
end
"#
    };
}

/// Issues a grant's fencing token from the counter `fence_check!` read: `max(counter, now)
/// + 1` (`now` the server's time in microseconds, as text), stored back; `token` is its
/// text. See [`TAKE`] for why.
macro_rules! fence_issue {
    () => {
        r#"if not counter or tonumber(counter) < tonumber(now) then
  redis.call("set", KEYS[4], now)
end
redis.call("incr", KEYS[4])
local token = redis.call("get", KEYS[4])
"#
    };
}

/// The prefix of the value a lock key holds while it is handed over to a waiter (the
/// waiter's id follows): no owner token starts with it. The scripts have it as `RESERVED`
/// (`reserved_prefix!`).
pub(crate) const RESERVED: &str = "verrou:handover:";

/// `RESERVED` ([`RESERVED`]) for the scripts.
macro_rules! reserved_prefix {
    () => {
        r#"local RESERVED = "verrou:handover:"
"#
    };
}

pub(crate) use {clock_function, fence_check, fence_issue, line_function, queued_line};

/// Takes `KEYS[1]` for owner `ARGV[1]` if it is free and nobody waits ahead, with a TTL of
/// `ARGV[2]` milliseconds (`0`: none), and, if `ARGV[3]` is `fenced`, issues the grant's
/// fencing token from the slot's counter `KEYS[4]` (given, and read, only then). `KEYS[2]`
/// and `KEYS[3]` are the key's line; `ARGV[4]`, if given, is the taker's waiter id and
/// `ARGV[5]` its lease in milliseconds. Returns `{token, 0}`, the token as decimal text
/// (exact, whatever its size; `"0"` when not fenced), or nil if the key is busy.
///
/// The line first: lapsed places are dropped. Then:
///
/// - the key holds `ARGV[1]`: a *renewal* (below), whatever the line; the taker's place, if
///   any, is removed;
/// - the key is reserved for the taker's waiter (handed over to it): `SET` replaces the
///   reservation with the owner and the TTL, and the place is removed;
/// - the key is held by another (or holds something other than an owner), or it is free but
///   a live place is ahead of the taker's (for a take without a place: any live place):
///   busy. A taker with a place keeps it: made at the back if it had none (arrival: the
///   server's time in microseconds, above the last arrival), deadline `ARGV[5]` ms from now.
///   A key free but for the line is handed over to the front waiter, as a release does
///   (reserved for it, its place cut to the window, `:WAITER` published): the key freed
///   without a release (its TTL ran out, or the waiter it was handed to never came), and a
///   front that is gone then holds the line up for one window, not its whole lease;
/// - else `SET NX PX` takes it, and the taker's place is removed.
///
/// Both line keys are set to expire with their last place, and deleted with it.
///
/// A renewal starts the key's TTL again (`PEXPIRE`, or `PERSIST` for none), issues a new token
/// the same way, and returns `{token, 1}`. That is what a take re-sent by the client gets when
/// its first sending was applied and the answer lost with the connection (the client re-sends
/// commands whose connection dropped, and those redirected by Redis Cluster), so that the
/// re-sent take reports the grant instead of "busy". The new token is valid for the hold: it
/// is greater than every token issued before (the one the lost answer carried included), and
/// every later grant's is greater still. (Returning the counter as it is would not do: after
/// the counter was lost, or deleted by hand, it may be missing or below the grant's token.)
///
/// The token is `max(counter, now) + 1`, stored back in the counter, where `now` is the
/// server's time in microseconds (`TIME`): never below the server's clock, so tokens keep
/// growing when the counter is lost (a restart without persistence, a failover to a replica
/// that missed the last increment), and strictly above the counter, which breaks ties
/// between grants of the same microsecond.
///
/// `now` is built as text from `TIME`'s two parts and only compared as a number (exact: it
/// is below 2^53 until the year 2255, and a counter too big to be exact is bigger still);
/// the counter is set to that text and raised by `INCR`, and its text is returned, since
/// `INCR`'s reply reaches the script as a double too.
///
/// Everything that can fail comes before the first write, so a failed take changes
/// nothing: the counter (when fenced) is read with `redis.pcall` and must be the text of an
/// integer from 0 to 2^63 - 2 (what this script writes, with room for one more `INCR`);
/// anything else (another type, text that is no such number) is an error reply naming the
/// counter, and the lock key is left alone. The lock key is read with `redis.pcall` too: a
/// key of another type is simply not the owner's, and the take is busy.
pub(crate) static TAKE: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::guarded(concat!(
        clock_function!(),
        reserved_prefix!(),
        r#"local now, now_ms = clock()
"#,
        fence_check!(if r#"ARGV[3] == "fenced""#),
        r#"local waiter = ARGV[4]
local L
local queued = 0
if waiter or redis.pcall("zcard", KEYS[2]) ~= 0 then
"#,
        line_function!(),
        r#"  L = line()
  queued = L.prune(now_ms)
end
local held = redis.pcall("get", KEYS[1])
local renewed = held == ARGV[1]
if renewed then
  if ARGV[2] == "0" then
    redis.call("persist", KEYS[1])
  else
    redis.call("pexpire", KEYS[1], ARGV[2])
  end
elseif waiter and held == RESERVED .. waiter then
  if ARGV[2] == "0" then
    redis.call("set", KEYS[1], ARGV[1])
  else
    redis.call("set", KEYS[1], ARGV[1], "PX", ARGV[2])
  end
elseif held or (queued > 0 and L.front() ~= waiter) then
  if not held then
    L.hand_over_reserved(now_ms)
  end
  if waiter then
    L.keep(waiter, now, now_ms, ARGV[5])
  end
  return false
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
if waiter and queued > 0 then
  L.leave(waiter, now_ms)
end
if ARGV[3] ~= "fenced" then
  return {"0", renewed and 1 or 0}
end
"#,
        fence_issue!(),
        r#"return {token, renewed and 1 or 0}"#
    ))
});

/// Releases `KEYS[1]` if its value is `ARGV[1]` (the owner): if a live waiter is in its line
/// (`KEYS[2]`, `KEYS[3]`), hands it over to the front one — cuts that waiter's deadline to at
/// most the hand-over window from now, reserves the key for it until then, and publishes
/// `:WAITER` on the key's release channel; else deletes it. Returns `WAITER`, or 1 if
/// nobody waits, or 0 if the key was not the owner's. (No table: returning one costs a
/// third of the whole script.)
pub(crate) static DELETE_IF_OWNER: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::guarded(concat!(
        r#"if redis.call("get", KEYS[1]) ~= ARGV[1] then
  return 0
end
if redis.pcall("zcard", KEYS[2]) == 0 then
  redis.call("del", KEYS[1])
  return 1
end
"#,
        clock_function!(),
        reserved_prefix!(),
        line_function!(),
        r#"local L = line()
local _, now_ms = clock()
L.prune(now_ms)
return L.hand_over_reserved(now_ms) or 1"#
    ))
});

/// Deletes `KEYS[1]` whoever holds it (or whoever it is reserved for), then hands it over
/// like [`DELETE_IF_OWNER`]. Returns `WAITER`, or the number of keys deleted if nobody
/// waits.
pub(crate) static FORCE_DELETE: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::guarded(concat!(
        r#"if redis.pcall("zcard", KEYS[2]) == 0 then
  return redis.call("del", KEYS[1])
end
"#,
        clock_function!(),
        reserved_prefix!(),
        line_function!(),
        r#"local L = line()
local _, now_ms = clock()
L.prune(now_ms)
local deleted = redis.call("exists", KEYS[1])
return L.hand_over_reserved(now_ms) or deleted"#
    ))
});

/// Removes waiter `ARGV[1]`'s place from the line (`KEYS[2]`, `KEYS[3]`) of `KEYS[1]`. If it
/// was at the front and the key is free, hands the key over to the next waiter, if any, like
/// [`DELETE_IF_OWNER`]: a waiter that gives up right after being handed the key does not
/// strand those behind it. Returns `WAITER` if it handed the key over, else 1 if the place
/// was removed, 0 if there was none.
///
/// With `ARGV[2]` `lock`, `KEYS[1]` is a lock key: free when it does not exist or is
/// reserved for the leaving waiter, and the hand-over moves the reservation to the next
/// waiter (or deletes it if nobody is left). Otherwise the key is free when `KEYS[1]` does
/// not exist (a read-write lock's writer set: readers do not keep the front out, it may be a
/// reader too); with `ARGV[2]` `open`, it always is: a semaphore's permits never keep the
/// front out (its limit, which it may still fit in, is its own).
pub(crate) static LEAVE_LINE: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::guarded(concat!(
        clock_function!(),
        reserved_prefix!(),
        line_function!(),
        r#"local L = line()
local _, now_ms = clock()
if L.prune(now_ms) == 0 then
  return 0
end
local was_front = L.front() == ARGV[1]
if not L.leave(ARGV[1], now_ms) then
  return 0
end
if not was_front then
  return 1
end
if ARGV[2] == "lock" then
  local held = redis.pcall("get", KEYS[1])
  if held and held ~= RESERVED .. ARGV[1] then
    return 1
  end
  return L.hand_over_reserved(now_ms) or 1
end
if ARGV[2] ~= "open" and redis.call("exists", KEYS[1]) == 1 then
  return 1
end
return L.hand_over(now_ms) or 1"#
    ))
});

/// Who may take `KEYS[1]` now: the waiter it is reserved for if it is; nil if it is held;
/// else the first waiter of its line (`KEYS[2]`, `KEYS[3]`) whose place has not lapsed, or
/// `""` if nobody waits. What a store that has just started hearing a key's hand-overs asks,
/// since one may have been missed, and asks again of every watched key each
/// `RECHECK_EVERY`. `KEYS[1]` and `ARGV[3]` (`lock` or `open`) say when the key is free as
/// for [`LEAVE_LINE`]; `KEYS[4]` holds other holders of the key (a read-write lock's
/// readers), or is `KEYS[1]` again.
///
/// A key nobody holds (no lock value, no holder in `KEYS[1]` or `KEYS[4]`) with a live line
/// was freed without a release (its holders' TTL ran out, or the waiter it was handed to
/// never came): the script hands it over to the front waiter, as a take refused only
/// because of the line does (its place cut to the window, `:WAITER` published; a lock key
/// reserved for it), unless it was handed it already, and names it. So a front that is gone
/// holds the line up for one window, not its whole lease, however long the retry delay of
/// the waiters behind it; and the script writes only then. (A share's key some holders
/// still hold may have room for the front or not: it is only named, as below.)
///
/// When lapsed places are ahead of the waiter it names, one of them may be a waiter of the
/// asking store that was handed the key before its subscription and lost its place after
/// the window: the script answers `""` then, so that every waiter of the asking store asks
/// (the one that lost its place joins again at the back). For a held share's key, whose
/// front is not handed anything here, it also wakes the live waiter wherever it waits
/// (`STORE:WAITER` published on the release channel `ARGV[1]`, `STORE` the asking store's id
/// `ARGV[2]`, through `redis.pcall`).
pub(crate) static NEXT_TAKER: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::guarded(concat!(
        reserved_prefix!(),
        r#"if ARGV[3] ~= "open" and redis.call("exists", KEYS[1]) == 1 then
  local held = redis.pcall("get", KEYS[1])
  if type(held) == "string" and string.sub(held, 1, #RESERVED) == RESERVED then
    return string.sub(held, #RESERVED + 1)
  end
  return false
end
local nobody_holds = redis.call("exists", KEYS[1], KEYS[4]) == 0
local places = nobody_holds and redis.pcall("zcard", KEYS[2])
if places and places ~= 0 then
"#,
        clock_function!(),
        line_function!(),
        r#"  local L = line()
  local _, now_ms = clock()
  local live = L.prune(now_ms)
  if live == 0 then
    return ""
  end
  L.hand_over_unless_handed(now_ms, ARGV[3] == "lock")
  if live < places then
    return ""
  end
  return L.front()
end
local time = redis.call("time")
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local index = 0
while true do
  local waiter = redis.call("zrange", KEYS[2], index, index)[1]
  if not waiter then
    return ""
  end
  local deadline = tonumber(redis.call("zscore", KEYS[3], waiter))
  if deadline and deadline >= now_ms then
    if index == 0 then
      return waiter
    end
    redis.pcall("spublish", ARGV[1], ARGV[2] .. ":" .. waiter)
    return ""
  end
  index = index + 1
end"#
    ))
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
    /// Whether each run also declares its slot's migration guard, after the keys it is
    /// given (see the module docs).
    guarded: bool,
    /// Whether an `EVAL` of the script was answered in this process: until then the server
    /// has likely never seen it, and `EVALSHA` would cost a round trip in vain.
    sent: AtomicBool,
}

impl LuaScript {
    /// The script of `source`, run on the keys it is given.
    pub(crate) fn new(source: &'static str) -> Self {
        Self {
            source: Str::from_static(source),
            sha1: Str::from(fred::util::sha1_hash(source)),
            guarded: false,
            sent: AtomicBool::new(false),
        }
    }

    /// The script of `source`, which may empty a key and touch it again, run on the keys it
    /// is given and, last, its slot's migration guard: never run on a slot while it moves.
    pub(crate) fn guarded(source: &'static str) -> Self {
        Self {
            guarded: true,
            ..Self::new(source)
        }
    }

    /// Runs the script on `keys` (all in `slot`) and the arguments `args` pushes: one
    /// `EVALSHA` round trip while the server has the script cached. When it does not
    /// (`NOSCRIPT`: restarted, failed over, `SCRIPT FLUSH`), `EVALSHA` did nothing, so the
    /// script is sent again in full with `EVAL`, which also puts it back in the cache of the
    /// node that owns the slot. The first sending of each script in a process is `EVAL`
    /// straight away: a new script (one of a new version, or one no store on the server ran
    /// yet) then costs one round trip, not two, and a take whose answer is lost still
    /// reached the server at once.
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
        let guard = self.guarded.then(|| slot.guard_key());
        let call = |script: &Str| {
            let mut arguments = Vec::with_capacity(2 + keys.len() + 4);
            arguments.push(Value::String(script.clone()));
            let declared = keys.len() + usize::from(guard.is_some());
            arguments.push(Value::Integer(declared as i64));
            push_in_one_buffer(&mut arguments, keys.iter().copied().chain(guard.as_deref()));
            args(&mut arguments);
            arguments
        };
        let command = |name| CustomCommand::new_static(name, slot.hash(), false);
        let eval = || async {
            let result = send(command("EVAL"), call(&self.source)).await;
            if result.is_ok() {
                self.sent.store(true, Ordering::Relaxed);
            }
            result
        };
        if !self.sent.load(Ordering::Relaxed) {
            return eval().await;
        }
        match send(command("EVALSHA"), call(&self.sha1)).await {
            Err(error) if error.details().starts_with("NOSCRIPT") => eval().await,
            result => result,
        }
    }
}

/// Appends `names` to `arguments` as slices of one buffer: one allocation for all of them
/// (a value of its own each would cost one each, and all are freed on the connection's
/// task, which contends with the callers' threads for the allocator).
fn push_in_one_buffer<'a>(
    arguments: &mut Vec<Value>,
    names: impl Iterator<Item = &'a str> + Clone,
) {
    let mut joined = String::with_capacity(names.clone().map(str::len).sum());
    names.clone().for_each(|name| joined.push_str(name));
    let joined = Bytes::from(joined);
    let mut start = 0;
    for name in names {
        let end = start + name.len();
        arguments.push(Value::Bytes(joined.slice(start..end)));
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_reserve_keys_with_the_stores_prefix() {
        assert_eq!(
            reserved_prefix!(),
            format!("local RESERVED = \"{RESERVED}\"\n")
        );
    }

    #[test]
    fn the_scripts_window_is_the_hand_over_window() {
        let window = verrou_core::HANDOVER_WINDOW.as_millis();
        assert!(line_function!().contains(&format!("\nlocal WINDOW = {window}\n")));
    }

    #[test]
    fn names_go_out_in_order_as_slices_of_one_buffer() {
        let mut arguments = vec![Value::Integer(2)];
        let names = ["lock", "verrou:line:{7}lock", "verrou:fence:{7}:guard"];
        push_in_one_buffer(&mut arguments, names.into_iter());
        let slices: Vec<&Bytes> = arguments[1..]
            .iter()
            .map(|value| match value {
                Value::Bytes(bytes) => bytes,
                other => panic!("not bytes: {other:?}"),
            })
            .collect();
        assert_eq!(slices, names);
        // Each starts where the one before ends: one buffer.
        for pair in slices.windows(2) {
            assert_eq!(
                pair[0].as_ptr().wrapping_add(pair[0].len()),
                pair[1].as_ptr()
            );
        }
    }

    #[test]
    fn sha1_is_the_script_cache_name() {
        let script = LuaScript::new("return 1");
        assert_eq!(script.sha1, "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    }
}
