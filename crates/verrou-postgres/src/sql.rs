//! The SQL text of every statement, built once per store for its table.
//!
//! Times are always the database server's: `statement_timestamp()` is the server's clock
//! when the statement arrived and stays the same for the whole statement, so the row a
//! statement picks and the answer it returns agree on what "now" is (`clock_timestamp()`
//! would move while the statement runs). The client only ever sends durations, never
//! instants. Epoch milliseconds are computed in `double precision` (`date_part`), not in
//! `numeric` (`extract`), which takes the server about twice as long.
//!
//! Expirations are written rounded up ([`EXPIRES_FROM_NOW`]) and compared with "now"
//! rounded down ([`NOW_MS`]), so a lock lives at least its whole TTL on the server: never
//! shorter than the holder, who counts its TTL from before it sent the request, believes.

use std::time::Duration;

use verrou_core::{Result, HANDOVER_WINDOW};

use crate::channel::PAYLOAD_SQL;
use crate::identifier::TableName;
use crate::shares_sql::ShareStatements;

/// The server's current time in epoch milliseconds (rounded down), the unit of the
/// `expiration` and `deadline` columns.
pub(crate) const NOW_MS: &str = "floor(date_part('epoch', statement_timestamp()) * 1000)::bigint";

/// The server's current time in epoch milliseconds rounded up: the base of every written
/// expiration and deadline (plus the TTL or lease).
pub(crate) const EXPIRES_FROM_NOW: &str =
    "ceil(date_part('epoch', statement_timestamp()) * 1000)::bigint";

/// The most rows one sweep statement deletes, so it never holds many row locks for long.
pub(crate) const SWEEP_BATCH: i64 = 1000;

/// Every statement a store runs, with its table names quoted in.
///
/// Beside the lock table (`key`, `owner`, `expiration`: the Node.js library's layout, never
/// changed here) lives the table's waiting line (see [`Statements::create_table`]): one row,
/// a *place*, per waiter of a key, ordered by `arrival`, alive until `deadline`. The lock
/// row's `ON CONFLICT` alone keeps two owners apart; the line only decides who goes first.
///
/// Rows are locked in one order, lock row first, then the caller's own place, and other
/// waiters' places only with `SKIP LOCKED`, so that no two statements wait for each other
/// (a deadlock would fail one of them).
#[derive(Debug)]
pub(crate) struct Statements {
    /// Takes a key if it is free or expired and nobody waits in its line (a live place).
    /// Params: key, owner, ttl ms (null: never expires). Returns the grant's fencing token
    /// (one `bigint` row) when granted, no row when busy. An owner that holds the key finds
    /// it busy.
    ///
    /// The token is drawn in `RETURNING`, while this statement holds the key's row: a
    /// later grant of the key can only draw after this statement has committed, so its
    /// token is greater, even if the row is deleted in between (release, sweep). Drawing in
    /// `VALUES` instead would draw before waiting for the row and could hand out a stale,
    /// smaller token.
    pub(crate) save: String,
    /// Takes a key like [`save`](Self::save), for a waiter: only if no live place is ahead
    /// of the waiter's (a live one it holds, or the back of the line). When busy, the place
    /// is kept, or made at the back, and lasts the lease from now; when granted, it is
    /// removed. Params: key, owner, ttl ms, waiter, lease ms. Returns as `save` does.
    pub(crate) save_in_line: String,
    /// Releases a live lock held by the owner, and deletes the key's row if it has expired
    /// whoever held it; then hands the key over (see [`hand_over`]). Params: key, owner.
    /// Returns no row when nothing was deleted, else one row: whether the owner's live lock
    /// was released, and the waiter the key was handed to (null: nobody waits).
    pub(crate) delete: String,
    /// Deletes a key whoever holds it and hands it over. Params: key. One row if a row was
    /// deleted, as [`delete`](Self::delete) returns it.
    pub(crate) force_delete: String,
    /// Removes a waiter's place; if the key is free, hands it over to the line's front.
    /// Params: key, waiter. One row (the waiter the key was handed to) or none.
    pub(crate) leave_line: String,
    /// Whether a key is held and unexpired. Params: key. Returns one boolean.
    pub(crate) exists: String,
    /// Moves a live lock's expiration if the owner holds it. Params: key, owner, ttl ms.
    /// One row (`true`): extended; none: not the owner's (or expired).
    pub(crate) extend: String,
    /// Deletes up to a batch of expired lock rows, skipping rows other statements have
    /// locked. Params: batch size. Returns one row: how many it deleted.
    pub(crate) sweep: String,
    /// Deletes up to a batch of lapsed places, like [`sweep`](Self::sweep).
    pub(crate) sweep_line: String,
    /// Creates the table, its fencing-token sequence, its waiting line and its shares table
    /// (see [`ShareStatements`]) where they do not exist. No params; several statements, for `batch_execute`.
    ///
    /// The line is `UNLOGGED`: it is written at every busy take, and losing it in a crash
    /// (or a failover, whose new primary starts it empty) costs only the order of the
    /// waiters of that moment. Its primary key finds a waiter's place; its index, the front
    /// of a key's line.
    pub(crate) create_table: String,
    /// Subscribes the listener's session to the table's announcements. No params.
    pub(crate) listen: String,
    /// Which of the given keys are free now. Params: keys (`text[]`). One row per free key.
    pub(crate) probe: String,
    /// The statements of semaphores and read-write locks, whose table `create_table`
    /// creates too.
    pub(crate) shares: ShareStatements,
}

/// The `handed` step of the statements that free a key (in a `WITH`), on the line whose key
/// is the SQL expression `line_key` (`$1` for a lock): if `condition` holds, the first live
/// place of that line that no other
/// statement has locked now (the front, unless it is being left or handed to right now) is
/// cut to the hand-over window ([`HANDOVER_WINDOW`]: a front that died blocks those behind
/// it no longer than that) and announced on `channel`, naming its waiter (see
/// `channel.rs`); the notification goes out when the statement commits, and only when
/// someone waits. Returns the waiter.
pub(crate) fn hand_over(line: &str, channel: &str, line_key: &str, condition: &str) -> String {
    let window = HANDOVER_WINDOW.as_millis();
    format!(
        "handed AS (UPDATE {line} AS place \
         SET \"deadline\" = least(place.\"deadline\", {EXPIRES_FROM_NOW} + {window}) \
         WHERE (place.\"key\", place.\"waiter\") = (SELECT \"key\", \"waiter\" FROM {line} \
         WHERE \"key\" = {line_key} AND \"deadline\" >= {NOW_MS} AND {condition} \
         ORDER BY \"arrival\", \"waiter\" LIMIT 1 FOR UPDATE SKIP LOCKED) \
         RETURNING place.\"waiter\", pg_notify('{channel}', {PAYLOAD_SQL}))"
    )
}

/// Takes the lock row of key $1 for owner $2 and ttl $3 (ms) when `condition` holds (no
/// waiter is in the way) and the key is free or expired, returning the fencing token. The
/// params are typed `text` here: the line's columns are `text`, a lock table the Node.js
/// library created has `varchar` ones, and PostgreSQL refuses to guess between the two.
fn take_row(table: &str, sequence: &str, condition: &str) -> String {
    format!(
        "INSERT INTO {table} AS held (\"key\", \"owner\", \"expiration\") \
         SELECT $1::text, $2::text, {EXPIRES_FROM_NOW} + $3::bigint WHERE {condition} \
         ON CONFLICT (\"key\") DO UPDATE \
         SET \"owner\" = excluded.\"owner\", \"expiration\" = excluded.\"expiration\" \
         WHERE held.\"expiration\" <= {NOW_MS} \
         RETURNING nextval('{sequence}') AS token"
    )
}

/// Deletes up to a batch (param 1) of `table`'s rows matching `condition`, skipping rows
/// other statements have locked; returns how many it deleted.
pub(crate) fn sweep(table: &str, condition: &str) -> String {
    format!(
        "WITH swept AS (DELETE FROM {table} WHERE ctid = ANY (ARRAY(\
         SELECT ctid FROM {table} WHERE {condition} LIMIT $1 FOR UPDATE SKIP LOCKED)) \
         AND {condition} RETURNING 1) SELECT count(*) FROM swept"
    )
}

impl Statements {
    /// Builds the statements for `table`, announcing hand-overs on `channel`.
    pub(crate) fn new(table: &TableName, channel: &str) -> Self {
        let sequence = table.sequence_quoted();
        let line = table.line_quoted();
        let (line_key, line_order) = (table.line_key(), table.line_order());
        let shares = ShareStatements::new(table, channel);
        let table = table.quoted();
        let live = format!("(\"expiration\" IS NULL OR \"expiration\" > {NOW_MS})");
        let expired = format!("\"expiration\" <= {NOW_MS}");
        let waiting = format!("\"deadline\" >= {NOW_MS}");
        let held = format!("EXISTS (SELECT 1 FROM {table} WHERE \"key\" = $1 AND {live})");
        let release = |which: &str, mine: &str| {
            format!(
                "WITH released AS (DELETE FROM {table} WHERE \"key\" = $1 {which} \
                 RETURNING {mine} AS mine), {} \
                 SELECT released.mine, (SELECT \"waiter\" FROM handed) FROM released",
                hand_over(line, channel, "$1", "EXISTS (SELECT 1 FROM released)")
            )
        };
        Self {
            save: take_row(
                table,
                sequence,
                &format!("NOT EXISTS (SELECT 1 FROM {line} WHERE \"key\" = $1 AND {waiting})"),
            ),
            save_in_line: format!(
                "WITH mine AS (SELECT \"arrival\" FROM {line} \
                 WHERE \"key\" = $1 AND \"waiter\" = $4 AND {waiting}), \
                 ahead AS (SELECT 1 FROM {line} AS other \
                 WHERE other.\"key\" = $1 AND other.{waiting} AND other.\"waiter\" <> $4 \
                 AND NOT EXISTS (SELECT 1 FROM mine \
                 WHERE (mine.\"arrival\", $4::text) < (other.\"arrival\", other.\"waiter\")) \
                 LIMIT 1), \
                 taken AS ({}), \
                 placed AS (INSERT INTO {line} AS place (\"key\", \"waiter\", \"arrival\", \"deadline\") \
                 SELECT $1, $4, statement_timestamp(), {EXPIRES_FROM_NOW} + $5::bigint \
                 WHERE NOT EXISTS (SELECT 1 FROM taken) \
                 ON CONFLICT (\"key\", \"waiter\") DO UPDATE \
                 SET \"deadline\" = excluded.\"deadline\", \"arrival\" = CASE \
                 WHEN place.{waiting} THEN place.\"arrival\" ELSE excluded.\"arrival\" END), \
                 served AS (DELETE FROM {line} \
                 WHERE \"key\" = $1 AND \"waiter\" = $4 AND EXISTS (SELECT 1 FROM taken)) \
                 SELECT token FROM taken",
                take_row(table, sequence, "NOT EXISTS (SELECT 1 FROM ahead)")
            ),
            delete: release(
                &format!("AND (\"owner\" = $2 OR {expired})"),
                &format!("\"owner\" = $2 AND {live}"),
            ),
            force_delete: release("", "true"),
            leave_line: format!(
                "WITH gone AS (DELETE FROM {line} WHERE \"key\" = $1 AND \"waiter\" = $2 \
                 RETURNING 1), {} SELECT \"waiter\" FROM handed",
                hand_over(
                    line,
                    channel,
                    "$1",
                    &format!(
                        "\"waiter\" <> $2 AND EXISTS (SELECT 1 FROM gone) AND NOT {held}"
                    )
                )
            ),
            exists: format!("SELECT {held}"),
            extend: format!(
                "UPDATE {table} SET \"expiration\" = {EXPIRES_FROM_NOW} + $3::bigint \
                 WHERE \"key\" = $1 AND \"owner\" = $2 AND {live} RETURNING true"
            ),
            sweep: sweep(table, &expired),
            sweep_line: sweep(line, &format!("NOT {waiting}")),
            create_table: format!(
                "CREATE TABLE IF NOT EXISTS {table} (\
                 \"key\" text PRIMARY KEY, \"owner\" text NOT NULL, \"expiration\" bigint); \
                 CREATE SEQUENCE IF NOT EXISTS {sequence}; \
                 CREATE UNLOGGED TABLE IF NOT EXISTS {line} (\
                 \"key\" text NOT NULL, \"waiter\" text NOT NULL, \
                 \"arrival\" timestamptz NOT NULL, \"deadline\" bigint NOT NULL, \
                 CONSTRAINT {line_key} PRIMARY KEY (\"key\", \"waiter\")); \
                 CREATE INDEX IF NOT EXISTS {line_order} ON {line} (\"key\", \"arrival\", \"waiter\"); {}",
                shares.create_table
            ),
            listen: format!("LISTEN \"{channel}\""),
            probe: format!(
                "SELECT k FROM unnest($1::text[]) AS k \
                 WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE \"key\" = k AND {live})"
            ),
            shares,
        }
    }
}

/// Which of the relations whose quoted names are in param 1 (`text[]`) do not exist,
/// resolved like the statements resolve them (through `search_path` when unqualified). One
/// row per missing name.
pub(crate) const MISSING_OBJECTS: &str =
    "SELECT name FROM unnest($1::text[]) AS name WHERE to_regclass(name) IS NULL";

/// The declared length, in characters, of the `key` column of the table whose quoted name
/// is in param 1 (resolved like [`MISSING_OBJECTS`] resolves it), when the column is
/// `varchar(n)` or `char(n)`: one `integer` row (`atttypmod` is the length plus the 4-byte
/// header). No row for `text`, an unbounded `varchar`, or a missing table.
pub(crate) const KEY_COLUMN_LENGTH: &str = "SELECT atttypmod - 4 FROM pg_attribute \
     WHERE attrelid = to_regclass($1) AND attname = 'key' \
     AND atttypid IN ('varchar'::regtype, 'bpchar'::regtype) AND atttypmod > 4";

/// Serializes table creation between processes until the end of the transaction, keyed by
/// the text in param 1.
pub(crate) const CREATION_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext($1))";

/// A TTL as whole milliseconds for the `expiration` arithmetic, rounded up so a positive TTL
/// never becomes an already-expired zero. A TTL over [`MAX_DURATION`](verrou_core::MAX_DURATION),
/// which no lock sends, is [`Error::InvalidDuration`](verrou_core::Error::InvalidDuration),
/// as everywhere: shortening it would let the lock expire before its holder expects.
/// (`MAX_DURATION` in milliseconds added to the server's epoch milliseconds is far from
/// overflowing `bigint`.)
pub(crate) fn ttl_millis(ttl: Duration) -> Result<i64> {
    Ok(i64::try_from(verrou_core::ttl_millis(ttl)?).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use verrou_core::{Error, MAX_DURATION};

    use super::*;

    #[test]
    fn ttls_round_up_and_stop_at_max_duration() {
        let millis = |ttl| ttl_millis(ttl).ok();
        assert_eq!(millis(Duration::from_micros(1)), Some(1));
        assert_eq!(millis(Duration::from_millis(1500)), Some(1500));
        assert_eq!(millis(Duration::from_micros(1_500_001)), Some(1501));
        assert_eq!(millis(MAX_DURATION), Some(3650 * 86_400_000));
        assert_eq!(millis(MAX_DURATION + Duration::from_nanos(1)), None);
        assert!(matches!(
            ttl_millis(Duration::MAX),
            Err(Error::InvalidDuration { .. })
        ));
    }

    fn statements(table: &str) -> Statements {
        let table = TableName::parse(table).expect("valid name");
        Statements::new(&table, &crate::channel::channel(&table))
    }

    #[test]
    fn statements_use_the_quoted_tables_and_the_server_clock() {
        let statements = statements("app.locks");
        for sql in [
            &statements.save,
            &statements.save_in_line,
            &statements.delete,
            &statements.force_delete,
            &statements.leave_line,
            &statements.exists,
            &statements.extend,
            &statements.sweep,
            &statements.probe,
        ] {
            assert!(sql.contains("\"app\".\"locks\""), "{sql}");
            assert!(sql.contains("statement_timestamp()"), "{sql}");
        }
        for sql in [
            &statements.save,
            &statements.save_in_line,
            &statements.delete,
            &statements.leave_line,
            &statements.sweep_line,
        ] {
            assert!(sql.contains("\"app\".\"locks_waiters\""), "{sql}");
        }
    }

    #[test]
    fn hand_overs_cut_to_the_window_and_announce_on_the_tables_channel() {
        let statements = statements("app.locks");
        for sql in [
            &statements.delete,
            &statements.force_delete,
            &statements.leave_line,
        ] {
            assert!(
                sql.contains(
                    "pg_notify('verrou:app.locks', place.\"waiter\" || ' ' || place.\"key\")"
                ),
                "{sql}"
            );
            assert!(sql.contains("::bigint + 100)"), "{sql}");
            assert!(sql.contains("FOR UPDATE SKIP LOCKED"), "{sql}");
        }
        assert!(!statements.save.contains("pg_notify"));
        assert!(!statements.save_in_line.contains("pg_notify"));
        assert_eq!(statements.listen, "LISTEN \"verrou:app.locks\"");
    }
}
