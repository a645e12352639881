//! The SQL text of the semaphore and read-write lock statements.
//!
//! The shares table (`<table>_shares`) has one row per held key of a family: `family`
//! (`semaphore` or `rw_lock`), `key`, and `holders`, a `jsonb` object whose fields are the
//! holders' owner tokens, each `{"side": "permit" | "read" | "write", "expiration": epoch
//! ms | null}`. A take is one `INSERT ... ON CONFLICT ("family", "key") DO UPDATE ... WHERE
//! <room>`: under READ COMMITTED, `DO UPDATE` locks the row and sees its latest version, so
//! the room check and the change are one step, however many takers race (a `count(*)` over
//! rows of their own, in a subquery, would read its snapshot before waiting for the lock,
//! and two takers could both see one permit left). Every statement that writes a row drops
//! the holders that have expired (by the server's clock), and a row left without holders is
//! deleted.
//!
//! Waiters wait in the line the locks use (`<table>_waiters`), under a line key no lock key
//! can be: `chr(1)`, the family's name, `:`, the key (see `family.rs`). Readers and writers
//! of a key share its line. Hand-overs are announced as the locks' are, naming that line key,
//! so the listener tells them apart.
//!
//! Params, in every statement that has them: `$1` the key, `$2` the family's name; then, by
//! statement, the owner `$3` and the side `$4` (`permit`, `read`, `write`).

use crate::family::line_key_sql;
use crate::identifier::TableName;
use crate::sql::{hand_over, handover_ends, sweep, PlaceLock, EXPIRES_FROM_NOW, NOW_MS};

/// Every semaphore and read-write lock statement of a store, with its tables quoted in.
#[derive(Debug)]
pub(crate) struct ShareStatements {
    /// Takes a share if there is room and no live waiter is ahead of the taker: with a
    /// waiter (`$7`), ahead of its place, which is kept (or made at the back) for the lease
    /// (`$8` ms) when busy and removed when granted; without (`$7` null), any live place is
    /// ahead. Params: key, family, owner, side, ttl ms (null: never expires), limit
    /// (permits; null otherwise), waiter, lease ms. Room: fewer other live permits than the
    /// taker's limit; no other live writer (to read); no other live holder (to write); and
    /// the owner does not hold the side already (busy then: a take is never re-sent here,
    /// and the lock is not reentrant).
    ///
    /// Returns no row when busy, else one: the fencing token (drawn in `RETURNING`, while
    /// the row is locked, as the locks' `save` draws it, so later grants draw greater ones),
    /// and the waiter the key was handed over to: a granted permit that leaves room under
    /// the taker's limit, or a granted read, hands over to the line's next front.
    pub(crate) take: String,
    /// Gives back the owner's share if it holds it unexpired, drops expired holders, and
    /// deletes the row if none is left; if it freed anything and no writer is left, hands
    /// over to the line's front. Params: key, family, owner, side. One row: whether the
    /// owner's share was given back, and the waiter the key was handed to (or null).
    ///
    /// The row is read `FOR UPDATE` first, so its latest version is the one both the
    /// `DELETE` and the `UPDATE` (whichever applies) work on.
    pub(crate) release: String,
    /// Makes the owner's live share expire the TTL from now. Params: key, family, owner,
    /// side, ttl ms. One row (`true`): extended; none: not held.
    pub(crate) extend: String,
    /// Deletes every holder of the key in the family and hands over to the line's front.
    /// Params: key, family. One row or none: the waiter the key was handed to. The row is
    /// deleted before a place is locked, as a take locks them, so the two never deadlock.
    pub(crate) force_delete: String,
    /// How many live holders of a side the key has. Params: key, family, side. One
    /// `bigint`.
    pub(crate) count: String,
    /// Removes a waiter's place; unless a writer holds the key, hands it over to the line's
    /// new front. Params: key, family, waiter. One row (the waiter the key was handed to) or
    /// none.
    pub(crate) leave_line: String,
    /// Which of the given keys of a family a waiter may find free, and who should ask: those
    /// no live writer holds. A key someone holds comes with the first live waiter of its
    /// line, who alone asks whether its share fits beside the holders (those behind it
    /// would ask in vain while it does not); a key nobody holds, with null: every waiter
    /// may ask, and a take refused only because of the line hands the key to a front that
    /// does not come, which is passed after its window. Params: keys (`text[]`), family. One
    /// row per such key.
    pub(crate) probe: String,
    /// Deletes up to a batch of rows whose holders have all expired, skipping rows other
    /// statements have locked. Params: batch size. One row: how many it deleted.
    pub(crate) sweep: String,
    /// Creates the shares table where it does not exist; part of the store's creation
    /// statements.
    pub(crate) create_table: String,
}

/// Whether the holder entry `h` (a `jsonb_each` row) has not expired.
fn live(h: &str) -> String {
    format!("(({h}.value->>'expiration') IS NULL OR ({h}.value->>'expiration')::bigint > {NOW_MS})")
}

/// Whether a live writer holds key `key` (SQL) of family `family` (SQL).
fn writer_holds(shares: &str, key: &str, family: &str) -> String {
    holder_exists(shares, key, family, "h.value->>'side' = 'write'")
}

/// Whether a live holder `h` of key `key` (SQL) of family `family` (SQL) meets `condition`.
fn holder_exists(shares: &str, key: &str, family: &str, condition: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM {shares} AS s, jsonb_each(s.\"holders\") AS h \
         WHERE s.\"family\" = {family} AND s.\"key\" = {key} AND {condition} AND {})",
        live("h")
    )
}

/// `column` of the first live place of the line keyed `line_key` (SQL) in `line`.
fn front(line: &str, line_key: &str, column: &str) -> String {
    format!(
        "(SELECT \"{column}\" FROM {line} WHERE \"key\" = {line_key} \
         AND \"deadline\" >= {NOW_MS} ORDER BY \"arrival\", \"waiter\" LIMIT 1)"
    )
}

/// The live holders of `holders` (SQL) other than the owner `$3`, as a `jsonb` object.
fn others(holders: &str) -> String {
    format!(
        "(SELECT coalesce(jsonb_object_agg(h.key, h.value), '{{}}'::jsonb) \
         FROM jsonb_each({holders}) AS h WHERE h.key <> $3::text AND {})",
        live("h")
    )
}

/// The holder entry of the taker or extender: side `$4`, expiring `ttl` (SQL, ms) from now.
fn entry(ttl: &str) -> String {
    format!(
        "jsonb_build_object($3::text, jsonb_build_object('side', $4::text, \
         'expiration', {EXPIRES_FROM_NOW} + {ttl}))"
    )
}

impl ShareStatements {
    /// Builds the statements for `table`.
    pub(crate) fn new(table: &TableName) -> Self {
        let shares = table.shares_quoted();
        let line = table.line_quoted();
        let sequence = table.sequence_quoted();
        let lk = &line_key_sql("$1::text");
        let waiting = format!("\"deadline\" >= {NOW_MS}");
        let this_row = "\"family\" = $2::text AND \"key\" = $1::text";
        let live_h = live("h");
        let mine = "(h.key = $3::text AND h.value->>'side' = $4::text)";
        // The owner's own live share of the side makes the take busy: the lock is not
        // reentrant, and a second hold is not made (nor the first one's TTL restarted).
        let room = format!(
            "(SELECT CASE $4::text WHEN 'permit' THEN count(*) < $6::int \
             WHEN 'read' THEN count(*) FILTER (WHERE h.value->>'side' = 'write') = 0 \
             ELSE count(*) = 0 END \
             FROM jsonb_each(held.\"holders\") AS h WHERE h.key <> $3::text AND {live_h}) \
             AND NOT EXISTS (SELECT 1 FROM jsonb_each(held.\"holders\") AS h \
             WHERE {mine} AND {live_h})"
        );
        let room_left = "CASE $4::text WHEN 'read' THEN true \
             WHEN 'permit' THEN (SELECT count(*) FROM jsonb_object_keys(held.\"holders\")) < $6::int \
             ELSE false END";
        // A permit that fits the taker fits the front (or it asks once in vain); a reader
        // or writer at the front fits a key nobody holds.
        let free_for_front = format!(
            "(SELECT count(*) FROM {shares} AS s, jsonb_each(s.\"holders\") AS h \
             WHERE s.\"family\" = $2::text AND s.\"key\" = $1::text AND {live_h}) \
             < CASE $4::text WHEN 'permit' THEN $6::int ELSE 1 END"
        );
        let ends = handover_ends();
        let front_not_handed = format!("{} > {ends}", front(line, lk, "deadline"));
        Self {
            take: format!(
                "WITH mine AS (SELECT \"arrival\" FROM {line} \
                 WHERE \"key\" = {lk} AND \"waiter\" = $7::text AND {waiting}), \
                 ahead AS (SELECT 1 FROM {line} AS other \
                 WHERE other.\"key\" = {lk} AND other.{waiting} \
                 AND other.\"waiter\" IS DISTINCT FROM $7::text \
                 AND NOT EXISTS (SELECT 1 FROM mine \
                 WHERE (mine.\"arrival\", $7::text) < (other.\"arrival\", other.\"waiter\")) \
                 LIMIT 1), \
                 taken AS (INSERT INTO {shares} AS held (\"family\", \"key\", \"holders\") \
                 SELECT $2::text, $1::text, {entry} WHERE NOT EXISTS (SELECT 1 FROM ahead) \
                 ON CONFLICT (\"family\", \"key\") DO UPDATE \
                 SET \"holders\" = {others} || excluded.\"holders\" WHERE {room} \
                 RETURNING nextval('{sequence}') AS token, {room_left} AS room_left), \
                 placed AS (INSERT INTO {line} AS place (\"key\", \"waiter\", \"arrival\", \"deadline\") \
                 SELECT {lk}, $7::text, statement_timestamp(), {EXPIRES_FROM_NOW} + $8::bigint \
                 WHERE $7::text IS NOT NULL AND NOT EXISTS (SELECT 1 FROM taken) \
                 ON CONFLICT (\"key\", \"waiter\") DO UPDATE \
                 SET \"deadline\" = excluded.\"deadline\", \"arrival\" = CASE \
                 WHEN place.{waiting} THEN place.\"arrival\" ELSE excluded.\"arrival\" END), \
                 served AS (DELETE FROM {line} \
                 WHERE \"key\" = {lk} AND \"waiter\" = $7::text AND EXISTS (SELECT 1 FROM taken)), \
                 {} \
                 SELECT token, (SELECT \"waiter\" FROM handed) FROM taken",
                hand_over(
                    line,
                    lk,
                    &format!(
                        "\"waiter\" IS DISTINCT FROM $7::text \
                         AND (EXISTS (SELECT 1 FROM taken WHERE room_left) \
                         OR (EXISTS (SELECT 1 FROM ahead) AND NOT EXISTS (SELECT 1 FROM taken) \
                         AND {free_for_front} AND {front_not_handed}))"
                    ),
                    PlaceLock::SkipLocked,
                    &ends,
                ),
                entry = entry("$5::bigint"),
                others = others("held.\"holders\""),
            ),
            release: format!(
                "WITH locked AS (SELECT \"holders\" FROM {shares} WHERE {this_row} FOR UPDATE), \
                 rest AS (SELECT \
                 coalesce(jsonb_object_agg(h.key, h.value) FILTER (WHERE NOT {mine}), '{{}}'::jsonb) AS holders, \
                 coalesce(bool_or({mine}), false) AS mine, \
                 coalesce(bool_or(h.value->>'side' = 'write' AND NOT {mine}), false) AS writer \
                 FROM locked, jsonb_each(locked.\"holders\") AS h WHERE {live_h}), \
                 freed AS (SELECT 1 FROM locked, rest WHERE locked.\"holders\" <> rest.holders), \
                 gone AS (DELETE FROM {shares} WHERE {this_row} AND EXISTS (SELECT 1 FROM freed) \
                 AND (SELECT holders FROM rest) = '{{}}'::jsonb), \
                 kept AS (UPDATE {shares} SET \"holders\" = (SELECT holders FROM rest) \
                 WHERE {this_row} AND EXISTS (SELECT 1 FROM freed) \
                 AND (SELECT holders FROM rest) <> '{{}}'::jsonb), \
                 {} \
                 SELECT rest.mine, (SELECT \"waiter\" FROM handed) FROM rest",
                hand_over(
                    line,
                    lk,
                    "EXISTS (SELECT 1 FROM freed) AND NOT (SELECT writer FROM rest)", PlaceLock::SkipLocked, &ends),
            ),
            extend: format!(
                "UPDATE {shares} AS held \
                 SET \"holders\" = {} || {} \
                 WHERE {this_row} AND EXISTS (SELECT 1 FROM jsonb_each(held.\"holders\") AS h \
                 WHERE {mine} AND {live_h}) \
                 RETURNING true",
                others("held.\"holders\""),
                entry("$5::bigint"),
            ),
            // The hand-over's condition reads `cleared`, so the row is deleted (locked)
            // before any place is: the order every take locks them in.
            force_delete: format!(
                "WITH cleared AS (DELETE FROM {shares} WHERE {this_row} RETURNING 1), {} \
                 SELECT \"waiter\" FROM handed",
                hand_over(
                    line,
                    lk,
                    "(SELECT count(*) FROM cleared) >= 0",
                    PlaceLock::SkipLocked,
                    &ends
                ),
            ),
            count: format!(
                "SELECT count(*) FROM {shares} AS s, jsonb_each(s.\"holders\") AS h \
                 WHERE s.\"family\" = $2::text AND s.\"key\" = $1::text \
                 AND h.value->>'side' = $3::text AND {live_h}"
            ),
            leave_line: format!(
                "WITH gone AS (DELETE FROM {line} WHERE \"key\" = {lk} AND \"waiter\" = $3::text \
                 RETURNING 1), {} SELECT \"waiter\" FROM handed",
                hand_over(
                    line,
                    lk,
                    &format!(
                        "\"waiter\" <> $3::text AND EXISTS (SELECT 1 FROM gone) AND NOT {}",
                        writer_holds(shares, "$1::text", "$2::text")
                    ), PlaceLock::SkipLocked, &ends),
            ),
            probe: format!(
                "SELECT k, CASE WHEN {} THEN {} END \
                 FROM unnest($1::text[]) AS k WHERE NOT {}",
                holder_exists(shares, "k", "$2::text", "true"),
                front(line, &line_key_sql("k"), "waiter"),
                writer_holds(shares, "k", "$2::text")
            ),
            sweep: sweep(
                shares,
                &format!(
                    "NOT EXISTS (SELECT 1 FROM jsonb_each(\"holders\") AS h WHERE {live_h})"
                ),
            ),
            create_table: format!(
                "CREATE TABLE IF NOT EXISTS {shares} (\
                 \"family\" text NOT NULL, \"key\" text NOT NULL, \"holders\" jsonb NOT NULL, \
                 CONSTRAINT {} PRIMARY KEY (\"family\", \"key\"))",
                table.shares_key()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statements() -> ShareStatements {
        let table = TableName::parse("app.locks").expect("valid name");
        ShareStatements::new(&table)
    }

    #[test]
    fn statements_use_the_shares_table_and_the_server_clock() {
        let statements = statements();
        for sql in [
            &statements.take,
            &statements.release,
            &statements.extend,
            &statements.count,
            &statements.sweep,
            &statements.probe,
            &statements.leave_line,
        ] {
            assert!(sql.contains("\"app\".\"locks_shares\""), "{sql}");
            assert!(sql.contains("statement_timestamp()"), "{sql}");
        }
    }

    #[test]
    fn hand_overs_go_to_the_familys_line_and_announce_on_the_waiters_store_channel() {
        let statements = statements();
        for sql in [
            &statements.take,
            &statements.release,
            &statements.force_delete,
            &statements.leave_line,
        ] {
            assert!(sql.contains("\"app\".\"locks_waiters\""), "{sql}");
            assert!(sql.contains(&line_key_sql("$1::text")), "{sql}");
            assert!(
                sql.contains(
                    "pg_notify('verrou:' || split_part(place.\"waiter\", '.', 1), \
                     place.\"waiter\" || ' ' || place.\"key\")"
                ),
                "{sql}"
            );
        }
        assert!(!statements.extend.contains("pg_notify"));
    }
}
