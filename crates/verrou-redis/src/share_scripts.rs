//! The Lua scripts behind semaphores and read-write locks, one per operation, each atomic on
//! the server and on keys of the share key's hash slot only (names in [`crate::slots`]).
//!
//! # Holders
//!
//! The holders of a share are a sorted set: members the owners, scores their expiry, the
//! server's time in milliseconds after which the holder is gone (`+inf`: no TTL). A
//! semaphore has one, `verrou:permits:{N}:KEY`; a read-write lock two,
//! `verrou:readers:{N}:KEY` and `verrou:writer:{N}:KEY` (at most one member). Every script
//! first drops the expired holders (`ZREMRANGEBYSCORE` up to the server's time), and every
//! write makes the set expire with its last holder (`PEXPIRE`, or `PERSIST` while one holds
//! without TTL), so a set whose holders are gone goes too.
//!
//! A take has room when the taker's set has fewer live holders than its *limit*, and the
//! *excluding* set (if any) has none:
//!
//! | share | taker's set | limit | excluding set |
//! | --- | --- | --- | --- |
//! | permit | permits | the taker's own limit | none |
//! | read | readers | none | writer |
//! | write | writer | 1 | readers |
//!
//! # Lines and hand-over
//!
//! Each family keeps one line per key, as locks do (see [`crate::scripts`]), readers and
//! writers in the same one, so a waiting writer holds back new readers. A release hands the
//! key over to the front waiter (a writer cannot hold then: readers and writers exclude each
//! other), and so does a grant that leaves room for more (a permit under its limit, a
//! reader), so that sharers waiting in a row follow each other in. Fencing tokens come from
//! the slot's counter, as for locks: one sequence for every share of a key.
//!
//! Every script fails before its first write when a key it reads has the wrong type (set by
//! hand): an error reply naming the key.

use std::sync::LazyLock;

use crate::scripts::{
    clock_function, fence_check, fence_issue, line_function, queued_line, LuaScript,
};

/// `holders()`, which makes the functions on holder sets. Numbers are passed to Redis as
/// text made by `H.text`, as for the line.
macro_rules! holders_function {
    () => {
        r#"-- The functions on holder sets.
local function holders()
  local H = {}
  -- The decimal text of an integral number.
  function H.text(number)
    return string.format("%.0f", number)
  end
  -- How many holders (expired ones included) the set has, failing (before any write) if it
  -- is not a sorted set.
  function H.check(key)
    local reply = redis.pcall("zcard", key)
    if type(reply) == "table" and reply.err then
      error(redis.error_reply("ERR verrou: the holders key " .. key .. " cannot be read (" .. tostring(reply.err) .. "); was it changed by hand?"))
    end
    return reply
  end
  -- Drops the holders that expired by now_ms; returns how many are left.
  function H.prune(key, now_ms)
    if H.check(key) == 0 then
      return 0
    end
    redis.call("zremrangebyscore", key, "-inf", H.text(now_ms))
    return redis.call("zcard", key)
  end
  -- The expiry of a holder of ttl ms ("0": none) taken at now_ms.
  function H.deadline(ttl, now_ms)
    if ttl == "0" then
      return "+inf"
    end
    return H.text(now_ms + tonumber(ttl))
  end
  -- Makes the set expire with its last holder (never while one holds without TTL).
  function H.expire(key, now_ms)
    local last = redis.call("zrange", key, -1, -1, "WITHSCORES")[2]
    if last == "inf" then
      redis.call("persist", key)
    elseif last then
      redis.call("pexpire", key, H.text(tonumber(last) - now_ms + 1))
    end
  end
  return H
end
"#
    };
}

/// Takes a share of a key for owner `ARGV[1]`, TTL `ARGV[2]` ms (`0`: none), if there is
/// room and nobody waits ahead. `KEYS[1]` is the taker's holder set, `KEYS[2]` and `KEYS[3]`
/// the family's line of the key, `KEYS[4]` the slot's fencing counter, `KEYS[5]` the
/// excluding set if one is given (before the slot's migration guard, always last);
/// `ARGV[3]` is the limit (see the module's table), `ARGV[4]`, if given, the taker's waiter
/// id and `ARGV[5]` its lease in ms.
///
/// Returns `{token, renewed}`, or nil if busy. In order:
///
/// - the counter and the holder sets are checked (errors before any write), the line is
///   pruned like [`TAKE`](crate::scripts::TAKE)'s, and so are both holder sets;
/// - the owner holds already: a *renewal* (its expiry starts again), whatever the room and
///   the line, as [`TAKE`](crate::scripts::TAKE) renews a lock a re-sent take finds held;
/// - no room, or a live place ahead of the taker's (for a take without a place: any): busy,
///   and a taker with a place keeps it. Busy only because of the line, with room for the
///   front too (a semaphore: room for the taker, the front's limit is its own; a
///   read-write lock: nobody holds it), the key is handed over to the front unless its
///   place was cut to the window already, as [`TAKE`](crate::scripts::TAKE) hands over a
///   lock key free but for the line: a front that is gone holds the line up for one window,
///   not its whole lease;
/// - else the owner joins the set, and its place is removed.
///
/// The set is made to expire with its last holder, the token issued as
/// [`TAKE`](crate::scripts::TAKE) issues it, and a grant that leaves room in its set (a
/// permit under the limit, a reader) hands the key over to the line's new front.
pub(crate) static SHARE_TAKE: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::guarded(concat!(
        clock_function!(),
        holders_function!(),
        line_function!(),
        r#"local now, now_ms = clock()
"#,
        fence_check!(),
        r#"local H = holders()
H.check(KEYS[1])
local excluding = KEYS[6] and KEYS[5]
if excluding then
  H.check(excluding)
end
local waiter = ARGV[4]
local L
local queued = 0
if waiter or redis.pcall("zcard", KEYS[2]) ~= 0 then
  L = line()
  queued = L.prune(now_ms)
end
local held = H.prune(KEYS[1], now_ms)
local excluded = excluding and H.prune(excluding, now_ms) or 0
local renewed = redis.call("zscore", KEYS[1], ARGV[1]) ~= false
local room = held < tonumber(ARGV[3]) and excluded == 0
if not renewed and (not room or (queued > 0 and L.front() ~= waiter)) then
  if room and (held == 0 or not excluding) then
    L.hand_over_unless_handed(now_ms)
  end
  if waiter then
    L.keep(waiter, now, now_ms, ARGV[5])
  end
  return false
end
redis.call("zadd", KEYS[1], H.deadline(ARGV[2], now_ms), ARGV[1])
H.expire(KEYS[1], now_ms)
if waiter and queued > 0 then
  L.leave(waiter, now_ms)
end
"#,
        fence_issue!(),
        r#"if not renewed and queued > 0 and held + 1 < tonumber(ARGV[3]) then
  L.hand_over(now_ms)
end
return {token, renewed and 1 or 0}"#
    ))
});

/// Gives back owner `ARGV[1]`'s place in the holder set `KEYS[1]` if it holds it unexpired,
/// then hands the key over to the front waiter of the family's line (`KEYS[2]`, `KEYS[3]`),
/// as [`DELETE_IF_OWNER`](crate::scripts::DELETE_IF_OWNER) does. Returns `WAITER`, or 1 if nobody waits, or 0 if the owner held nothing.
pub(crate) static SHARE_RELEASE: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::guarded(concat!(
        clock_function!(),
        holders_function!(),
        line_function!(),
        r#"local _, now_ms = clock()
local H = holders()
H.check(KEYS[1])
"#,
        queued_line!(),
        r#"H.prune(KEYS[1], now_ms)
if redis.call("zrem", KEYS[1], ARGV[1]) == 0 then
  return 0
end
H.expire(KEYS[1], now_ms)
if queued == 0 then
  return 1
end
return L.hand_over(now_ms) or 1"#
    ))
});

/// Deletes every holder of a key in a family, the holder sets `KEYS[1]` and `KEYS[4]` (if
/// given before the slot's migration guard, always last), then hands the key over like
/// [`SHARE_RELEASE`] (line `KEYS[2]`, `KEYS[3]`).
/// Returns `WAITER`, or the number of sets deleted if nobody waits.
pub(crate) static SHARE_FORCE_DELETE: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::guarded(concat!(
        clock_function!(),
        holders_function!(),
        line_function!(),
        r#"local _, now_ms = clock()
local H = holders()
local sets = {KEYS[1], KEYS[5] and KEYS[4]}
for _, set in ipairs(sets) do
  H.check(set)
end
"#,
        queued_line!(),
        r#"local deleted = redis.call("del", unpack(sets))
if queued == 0 then
  return deleted
end
return L.hand_over(now_ms) or deleted"#
    ))
});

/// Makes owner `ARGV[1]`'s hold in the holder set `KEYS[1]` expire `ARGV[2]` ms from now if
/// it holds it unexpired. Returns 1 if it did, else 0.
///
/// Not guarded (an extension must get through while its slot moves, or the hold could
/// expire): it looks at the owner's hold before dropping the expired ones, so that it never
/// empties the set and then touches it (see [`crate::scripts`]).
pub(crate) static SHARE_EXTEND: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(concat!(
        clock_function!(),
        holders_function!(),
        r#"local _, now_ms = clock()
local H = holders()
H.check(KEYS[1])
local expiry = redis.call("zscore", KEYS[1], ARGV[1])
if not expiry or (expiry ~= "inf" and tonumber(expiry) <= now_ms) then
  return 0
end
H.prune(KEYS[1], now_ms)
redis.call("zadd", KEYS[1], "XX", H.deadline(ARGV[2], now_ms), ARGV[1])
H.expire(KEYS[1], now_ms)
return 1"#
    ))
});

/// How many unexpired holders the holder set `KEYS[1]` has, read-only.
pub(crate) static SHARE_COUNT: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(concat!(
        clock_function!(),
        holders_function!(),
        r#"local _, now_ms = clock()
local H = holders()
if H.check(KEYS[1]) == 0 then
  return 0
end
return redis.call("zcount", KEYS[1], "(" .. H.text(now_ms), "+inf")"#
    ))
});
