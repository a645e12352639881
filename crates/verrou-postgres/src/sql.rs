//! The SQL text of every statement, built once per store for its table.
//!
//! Times are always the database server's: `statement_timestamp()` is the server's clock
//! when the statement arrived and stays the same for the whole statement, so the row a
//! statement picks and the answer it returns agree on what "now" is (`clock_timestamp()`
//! would move while the statement runs). The one exception is the end of a hand-over
//! window ([`handover_ends`]), which counts from the hand-over itself. The client only ever
//! sends durations, never instants. Epoch milliseconds are computed in `double precision`
//! (`date_part`), not in `numeric` (`extract`), which takes the server about twice as long.
//!
//! Expirations are written rounded up ([`EXPIRES_FROM_NOW`]) and compared with "now"
//! rounded down ([`NOW_MS`]), so a lock lives at least its whole TTL on the server: never
//! shorter than the holder, who counts its TTL from before it sent the request, believes.
//!
//! A release that finds a waiter in the key's line does not leave the key free: it
//! *reserves* it for the waiter at the front, turning the lock row into one whose owner is
//! [`RESERVATION_MARK`] followed by that waiter's id and whose expiration is the hand-over
//! window from now. Every take from outside the line (a plain `save`, the Node.js library's
//! take) finds that row live and busy; only the waiter named takes it. So the plain take,
//! the hot path, never reads the line: a newcomer gets a key someone waits for only when the
//! key came free without a release (its holder's TTL ran out) or the waiter it was reserved
//! for did not come within the window. The hand-over itself (reserve, cut the waiter's
//! place, announce it) is the table's function [`Statements::create_table`] creates, run
//! within the statement that calls it: the release calls it only when the key has a line,
//! so a release nobody waits for pays one probe of the line, not the setup of the
//! hand-over's writes (as steps of the release's own `WITH`, they cost every release about
//! half of what a bare take and release cost the server, used or not).
//!
//! Every statement finds its rows by key, through an index, and each connection of the
//! store says so to the planner when it opens ([`SESSION_SETUP`]): a lock table holds
//! few live rows and churns, so after a vacuum (autovacuum's, every minute or so) it is a
//! page or two, the planner's cheapest way to find a key there is to read the whole table,
//! and the plan a connection caches keeps reading it as the churn's dead rows grow it
//! until the next vacuum. Measured with the cycle bench's 64 tasks on a table vacuumed
//! just before: a release read 86 to 139 buffers (40–47 µs of server time) that way,
//! against 6 (about 10 µs) through the index.

use std::time::Duration;

use verrou_core::{Result, HANDOVER_WINDOW};

use crate::channel::{CHANNEL_SQL, PAYLOAD_SQL};
use crate::identifier::TableName;
use crate::shares_sql::ShareStatements;

/// Run on each connection of the store when it opens (the pool's, and the listener's):
/// sequential scans only where no index serves (the sweeps, see `sweep.rs`, which read the
/// whole table anyway), so that no cached plan reads a whole lock table for one key (see
/// the module docs); and no JIT compilation, which a statement of a few microseconds never
/// repays, and which the cost a disabled scan is charged (before PostgreSQL 18) would
/// otherwise set off for every sweep (measured: 100 to 440 ms a sweep statement, against 8
/// to 31 µs without). JIT is turned off through `pg_settings` because a server before
/// PostgreSQL 11 has no `jit` setting, and `SET jit` would fail every connection there.
pub(crate) const SESSION_SETUP: &str = "SET enable_seqscan = off; \
    SELECT set_config(name, 'off', false) FROM pg_settings WHERE name = 'jit'";

/// The server's current time in epoch milliseconds (rounded down), the unit of the
/// `expiration` and `deadline` columns.
pub(crate) const NOW_MS: &str = "floor(date_part('epoch', statement_timestamp()) * 1000)::bigint";

/// The server's current time in epoch milliseconds rounded up: the base of every written
/// expiration and deadline (plus the TTL or lease).
pub(crate) const EXPIRES_FROM_NOW: &str =
    "ceil(date_part('epoch', statement_timestamp()) * 1000)::bigint";

/// The end of a hand-over window starting now: [`HANDOVER_WINDOW`] after the server's time
/// (epoch milliseconds, rounded up) when the statement gets there, not when it arrived, so
/// that the window begins when the key is handed over however long the statement waited
/// for a row lock before (counted from its arrival, a release that waited a window long
/// for a busy take's row lock would hand over a reservation already lapsed). A scalar
/// subquery, so the clock is read once per statement, not once per row scanned.
pub(crate) fn handover_ends() -> String {
    format!(
        "((SELECT ceil(date_part('epoch', clock_timestamp()) * 1000)::bigint) + {})",
        HANDOVER_WINDOW.as_millis()
    )
}

/// The most rows one sweep statement deletes, so it never holds many row locks for long.
pub(crate) const SWEEP_BATCH: i64 = 1000;

/// What the owner of a lock row reserved for a waiter starts with (`chr(1)` in SQL); the
/// waiter's id follows. No owner token the store accepts starts with it (see `store.rs`),
/// so no holder's release or extension ever matches a reservation.
pub(crate) const RESERVATION_MARK: char = '\u{1}';

/// Every statement a store runs, with its table names quoted in.
///
/// Beside the lock table (`key`, `owner`, `expiration`: the Node.js library's layout, never
/// changed here) lives the table's waiting line (see [`Statements::create_table`]): one row,
/// a *place*, per waiter of a key, ordered by `arrival`, alive until `deadline`. The lock
/// row's `ON CONFLICT` alone keeps two owners apart; the line only decides who goes first,
/// and a release hands the key over by *reserving* it (see the module docs).
///
/// Rows are locked so that no two statements wait for each other in a circle (a deadlock
/// would fail one of them): a statement that locks another waiter's place (a hand-over,
/// which waits for the front's place) locks the key's lock row first, so such statements
/// run one after another; any other statement locks no place but its own. (Shares hand over
/// with `SKIP LOCKED`, after their shares row.)
#[derive(Debug)]
pub(crate) struct Statements {
    /// Takes a key if it is free or expired; a key reserved for a waiter is busy (it is a
    /// live row), and the line is not read. Params: key, owner, ttl ms (null: never
    /// expires). Returns the grant's fencing token (one `bigint` row) when granted, no row
    /// when busy. An owner that holds the key finds it busy.
    ///
    /// The token is drawn in `RETURNING`, while this statement holds the key's row: a
    /// later grant of the key can only draw after this statement has committed, so its
    /// token is greater, even if the row is deleted in between (release, sweep). Drawing in
    /// `VALUES` instead would draw before waiting for the row and could hand out a stale,
    /// smaller token.
    pub(crate) save: String,
    /// Takes a key like [`save`](Self::save), for a waiter: only if no live place is ahead
    /// of the waiter's (a live one it holds, or the back of the line), or if the key is
    /// reserved for this waiter (then whatever is ahead: a place the hand-over skipped
    /// because another statement had it locked). A reservation for this waiter is taken
    /// as a free key is. When busy, the place is kept, or made at the back, and lasts the
    /// lease from now; when granted, it is removed. A key that is free but for the line
    /// (its row expired: its holder's TTL ran out, or the waiter it was reserved for never
    /// came) is handed over to the front waiter by the table's hand-over function, as a
    /// release does, so that a front that is gone holds the line up for one window, not its
    /// whole lease. Params: key, owner, ttl ms, waiter, lease ms. Returns one row: the
    /// grant's fencing token (null when busy) and the waiter the key was handed to (or
    /// null).
    ///
    /// The hand-over runs in the main query, before the place is written (a data-modifying
    /// `WITH` the main query does not read runs after it): the lock row, then the front's
    /// place, then the taker's own, as [`Statements`] says. The hand-over reads the line
    /// afresh, so it may find the taker at the front (the waiters ahead in this statement's
    /// snapshot left meanwhile) and cut the taker's place itself: then the place is not
    /// written again (a second change of one row in one statement is an error).
    pub(crate) save_in_line: String,
    /// Releases a live lock held by the owner; then, if the key has a line (any place, live
    /// or not: one probe of the line), calls the table's hand-over function, which reserves
    /// the key for the front waiter. An expired row is left alone, whoever held it: the
    /// next take reuses it, or the sweep deletes it. Params: key, owner. Returns no row when
    /// the owner held no live lock, else one row: the waiter the key was handed to (null:
    /// nobody waits).
    ///
    /// Its answer reads no column of the deleted row: deleting expired rows too and asking
    /// in `RETURNING` whether the row was the owner's and unexpired cost about 10,000 more
    /// instructions of the server per release (about 5% of a take and a release).
    pub(crate) delete: String,
    /// Deletes a key whoever holds it (or whoever it is reserved for) and hands it over
    /// like [`delete`](Self::delete). Params: key. One row if a row was deleted, as
    /// `delete` returns it.
    pub(crate) force_delete: String,
    /// Removes a waiter's place through the hand-over function: if the key was reserved
    /// for this waiter or is free, it is reserved for the next waiter, or freed if nobody
    /// else waits. Params: key, waiter. One row: the waiter the key was handed to, or null.
    pub(crate) leave_line: String,
    /// Whether a key is held by an owner and unexpired. A key reserved for a waiter is not:
    /// nobody holds it, though every take but that waiter's finds it busy. Params: key.
    /// Returns one boolean.
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
    /// (see [`ShareStatements`]) where they do not exist, and (re)creates the table's
    /// hand-over function (see [`hand_over_source`]). No params; several statements, for
    /// `batch_execute`.
    ///
    /// The line is `UNLOGGED`: it is written at every busy take, and losing it in a crash
    /// (or a failover, whose new primary starts it empty) costs only the order of the
    /// waiters of that moment. Its primary key finds a waiter's place; its index, the front
    /// of a key's line.
    pub(crate) create_table: String,
    /// The source of the hand-over function as the server keeps it (`pg_proc.prosrc`):
    /// a function whose source differs was made by another version of verrou, and is
    /// replaced (see `schema.rs`).
    pub(crate) hand_over_source: String,
    /// Which of the given keys a waiter may find free now, and for whom: one row per key
    /// that is free (the waiter null: any waiter of it may take it) or reserved for a
    /// waiter (that waiter). Params: keys (`text[]`).
    pub(crate) probe: String,
    /// The statements of semaphores and read-write locks, whose table `create_table`
    /// creates too.
    pub(crate) shares: ShareStatements,
}

/// How a hand-over locks the place of the waiter it hands the key to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PlaceLock {
    /// Skips the places other statements have locked: the first live place nobody has
    /// locked now gets the key (the front, unless it is being left or handed to right now).
    SkipLocked,
    /// Waits for the one place `condition` names, to which the key is reserved: skipping
    /// it while the waiter's own take (which found the key busy) has it locked would wake
    /// nobody, and leave every waiter behind it until the front's next retry.
    Wait,
}

/// The `handed` step of the statements that free a key (in a `WITH`: the shares', and the
/// locks' hand-over function), on the line whose key is the SQL expression `line_key` (`$1`
/// for a lock): if `condition` holds, the first live place of that line (locked as
/// `locking` says) is cut to the end of the hand-over window, the SQL expression `ends`
/// (see [`handover_ends`]: a front that died blocks those behind it no longer than that),
/// and announced on the channel of that waiter's store, naming it (see `channel.rs`); the
/// notification goes out when the statement commits, and only when someone waits. Returns
/// the waiter's name in the line.
pub(crate) fn hand_over(
    line: &str,
    line_key: &str,
    condition: &str,
    locking: PlaceLock,
    ends: &str,
) -> String {
    let locking = match locking {
        PlaceLock::SkipLocked => "FOR UPDATE SKIP LOCKED",
        PlaceLock::Wait => "FOR UPDATE",
    };
    format!(
        "handed AS (UPDATE {line} AS place \
         SET \"deadline\" = least(place.\"deadline\", {ends}) \
         WHERE (place.\"key\", place.\"waiter\") = (SELECT \"key\", \"waiter\" FROM {line} \
         WHERE \"key\" = {line_key} AND \"deadline\" >= {NOW_MS} AND {condition} \
         ORDER BY \"arrival\", \"waiter\" LIMIT 1 {locking}) \
         RETURNING place.\"waiter\", pg_notify({CHANNEL_SQL}, {PAYLOAD_SQL}))"
    )
}

/// The source of the hand-over function of the table `table` whose waiting line is `line`
/// (see [`create_function`]): `<name>(text, text) RETURNS text`, taking a key and a leaving
/// waiter (or null), in PL/pgSQL, whose plans each session caches (a hand-over is a few
/// statements; a release nobody waits for never calls it).
///
/// Hands `key` over to the first live place of its line other than `leaver`'s, if the key
/// is free for it: no row, an expired one, or one reserved for `leaver` (a release calls it
/// with no leaver, once it has deleted the row). The key's row becomes a reservation for
/// that waiter, lasting the hand-over window; then the waiter's place is cut to end with
/// the reservation and announced (see [`hand_over`]). With nobody to hand it to, a reservation for `leaver`
/// is deleted. `leaver`'s place, if any, is removed; a leaver with no place changes
/// nothing. Returns the waiter announced, or null.
///
/// The lock row is written (so locked) before any place: the front is read without a lock
/// by the statement that reserves the key for it, the leaver's place is deleted, and the
/// front's place is locked last, waiting for a take of the front's that has it (see
/// [`PlaceLock::Wait`]). Each statement of the function sees what the ones before it (and
/// its caller) wrote.
fn hand_over_source(table: &str, line: &str) -> String {
    let ends = handover_ends();
    let body = format!(
        "DECLARE front text; reserved_until bigint; woken text; \
         BEGIN \
         IF $2 IS NOT NULL AND NOT EXISTS \
         (SELECT 1 FROM {line} WHERE \"key\" = $1 AND \"waiter\" = $2) THEN RETURN NULL; END IF; \
         INSERT INTO {table} AS held (\"key\", \"owner\", \"expiration\") \
         SELECT $1, chr(1) || \"waiter\", {ends} FROM {line} \
         WHERE \"key\" = $1 AND \"waiter\" IS DISTINCT FROM $2 AND \"deadline\" >= {NOW_MS} \
         ORDER BY \"arrival\", \"waiter\" LIMIT 1 \
         ON CONFLICT (\"key\") DO UPDATE \
         SET \"owner\" = excluded.\"owner\", \"expiration\" = excluded.\"expiration\" \
         WHERE held.\"expiration\" <= {NOW_MS} OR held.\"owner\" = chr(1) || $2 \
         RETURNING substr(held.\"owner\", 2), held.\"expiration\" INTO front, reserved_until; \
         IF $2 IS NOT NULL THEN \
         IF front IS NULL THEN \
         DELETE FROM {table} WHERE \"key\" = $1 AND \"owner\" = chr(1) || $2; \
         END IF; \
         DELETE FROM {line} WHERE \"key\" = $1 AND \"waiter\" = $2; \
         END IF; \
         IF front IS NOT NULL THEN \
         WITH {} SELECT \"waiter\" INTO woken FROM handed; \
         END IF; \
         RETURN woken; \
         END",
        hand_over(
            line,
            "$1",
            "\"waiter\" = front",
            PlaceLock::Wait,
            "reserved_until"
        )
    );
    // Spaced from the quotes, as `dollar_quoted` keeps it.
    format!(" {body} ")
}

/// The statement that (re)creates the hand-over function `name` with `source`.
fn create_function(name: &str, source: &str) -> String {
    format!(
        "CREATE OR REPLACE FUNCTION {name}(text, text) RETURNS text LANGUAGE plpgsql AS {}",
        dollar_quoted(source)
    )
}

/// `source` between dollar quotes whose tag it does not contain (`$verrou$`, else
/// `$verrou1$`...): table names may hold `$`, so a fixed tag could end the body early.
fn dollar_quoted(source: &str) -> String {
    let tag = std::iter::once(String::from("$verrou$"))
        .chain((1u32..).map(|number| format!("$verrou{number}$")))
        .find(|tag| !source.contains(tag.as_str()))
        .unwrap_or_default();
    format!("{tag}{source}{tag}")
}

/// Takes the lock row of key $1 for owner $2 and ttl $3 (ms) from `rows` (the row to
/// insert, or none when a waiter is in the way) if the key is free or `takeable` holds of
/// the row in place (`held`), returning the fencing token. The params are typed `text`
/// here: the line's columns are `text`, a lock table the Node.js library created has
/// `varchar` ones, and PostgreSQL refuses to guess between the two.
fn take_row(table: &str, sequence: &str, rows: &str, takeable: &str) -> String {
    format!(
        "INSERT INTO {table} AS held (\"key\", \"owner\", \"expiration\") {rows} \
         ON CONFLICT (\"key\") DO UPDATE \
         SET \"owner\" = excluded.\"owner\", \"expiration\" = excluded.\"expiration\" \
         WHERE {takeable} \
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
    /// Builds the statements for `table`.
    pub(crate) fn new(table: &TableName) -> Self {
        let sequence = table.sequence_quoted();
        let line = table.line_quoted();
        let (line_key, line_order) = (table.line_key(), table.line_order());
        let function = table.hand_over_quoted();
        let shares = ShareStatements::new(table);
        let table = table.quoted();
        let live = format!("(\"expiration\" IS NULL OR \"expiration\" > {NOW_MS})");
        let expired = format!("\"expiration\" <= {NOW_MS}");
        let waiting = format!("\"deadline\" >= {NOW_MS}");
        let (owned, reserved) = (
            "left(\"owner\", 1) <> chr(1)",
            "left(\"owner\", 1) = chr(1)",
        );
        let reserved_for_me = "chr(1) || $4::text";
        let hand_over_source = hand_over_source(table, line);
        let release = |which: &str| {
            format!(
                "DELETE FROM {table} WHERE \"key\" = $1 {which} \
                 RETURNING CASE WHEN EXISTS (SELECT 1 FROM {line} WHERE \"key\" = $1) \
                 THEN {function}($1, NULL) END"
            )
        };
        Self {
            save: take_row(
                table,
                sequence,
                &format!("VALUES ($1::text, $2::text, {EXPIRES_FROM_NOW} + $3::bigint)"),
                &format!("held.{expired}"),
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
                 handed AS (SELECT {function}($1, NULL) AS waiter \
                 WHERE NOT EXISTS (SELECT 1 FROM taken) AND EXISTS (SELECT 1 FROM ahead) \
                 AND NOT EXISTS (SELECT 1 FROM {table} WHERE \"key\" = $1 AND {live})), \
                 placed AS (INSERT INTO {line} AS place (\"key\", \"waiter\", \"arrival\", \"deadline\") \
                 SELECT $1, $4, statement_timestamp(), {EXPIRES_FROM_NOW} + $5::bigint \
                 WHERE NOT EXISTS (SELECT 1 FROM taken) \
                 AND NOT EXISTS (SELECT 1 FROM handed WHERE waiter = $4) \
                 ON CONFLICT (\"key\", \"waiter\") DO UPDATE \
                 SET \"deadline\" = excluded.\"deadline\", \"arrival\" = CASE \
                 WHEN place.{waiting} THEN place.\"arrival\" ELSE excluded.\"arrival\" END), \
                 served AS (DELETE FROM {line} \
                 WHERE \"key\" = $1 AND \"waiter\" = $4 AND EXISTS (SELECT 1 FROM taken)) \
                 SELECT (SELECT token FROM taken), (SELECT waiter FROM handed)",
                take_row(
                    table,
                    sequence,
                    &format!(
                        "SELECT $1::text, $2::text, {EXPIRES_FROM_NOW} + $3::bigint \
                         WHERE NOT EXISTS (SELECT 1 FROM ahead) OR EXISTS (SELECT 1 FROM {table} \
                         WHERE \"key\" = $1::text AND \"owner\" = {reserved_for_me})"
                    ),
                    &format!("held.{expired} OR held.\"owner\" = {reserved_for_me}"),
                )
            ),
            delete: release(&format!("AND \"owner\" = $2 AND {live}")),
            force_delete: release(""),
            leave_line: format!("SELECT {function}($1, $2)"),
            exists: format!(
                "SELECT EXISTS (SELECT 1 FROM {table} WHERE \"key\" = $1 AND {live} AND {owned})"
            ),
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
                 CREATE INDEX IF NOT EXISTS {line_order} ON {line} (\"key\", \"arrival\", \"waiter\"); {}; {}",
                shares.create_table,
                create_function(function, &hand_over_source)
            ),
            hand_over_source,
            probe: format!(
                "SELECT k, (SELECT substr(\"owner\", 2) FROM {table} \
                 WHERE \"key\" = k AND {live} AND {reserved}) \
                 FROM unnest($1::text[]) AS k \
                 WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE \"key\" = k AND {live} AND {owned})"
            ),
            shares,
        }
    }
}

/// Which of the relations whose quoted names are in param 1 (`text[]`) do not exist, and
/// which of the functions whose quoted signatures are in param 2 (`text[]`, e.g.
/// `"f"(text, text)`) do not exist or have another source than the one at the same place
/// in param 3 (`text[]`): resolved like the statements resolve them (through `search_path`
/// when unqualified). One row per such name, relations first, with whether it exists.
pub(crate) const MISSING_OR_OUTDATED: &str =
    "SELECT name, false FROM unnest($1::text[]) AS name WHERE to_regclass(name) IS NULL \
     UNION ALL SELECT name, to_regprocedure(name) IS NOT NULL \
     FROM unnest($2::text[], $3::text[]) AS function (name, source) \
     WHERE (SELECT prosrc FROM pg_proc WHERE oid = to_regprocedure(name)) \
     IS DISTINCT FROM source";

/// The declared length, in characters, of the `key` column of the table whose quoted name
/// is in param 1 (resolved like [`MISSING_OR_OUTDATED`] resolves it), when the column is
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
    fn the_functions_dollar_quotes_are_not_in_its_body() {
        assert_eq!(dollar_quoted(" BEGIN END "), "$verrou$ BEGIN END $verrou$");
        assert_eq!(
            dollar_quoted("x$verrou$ $verrou1$"),
            "$verrou2$x$verrou$ $verrou1$$verrou2$"
        );
        let table = TableName::parse("locks$verrou$").expect("a valid name");
        let statements = Statements::new(&table);
        let function = &statements.create_table;
        assert!(function.contains("AS $verrou1$ DECLARE"), "{function}");
        // What the server keeps as the function's source, compared at startup.
        let quoted_source = format!("$verrou1${}$verrou1$", statements.hand_over_source);
        assert!(function.contains(&quoted_source), "{function}");
    }

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
        Statements::new(&table)
    }

    #[test]
    fn statements_use_the_quoted_tables_and_the_server_clock() {
        let statements = statements("app.locks");
        for sql in [
            &statements.save,
            &statements.save_in_line,
            &statements.delete,
            &statements.force_delete,
            &statements.exists,
            &statements.extend,
            &statements.sweep,
            &statements.probe,
        ] {
            assert!(sql.contains("\"app\".\"locks\""), "{sql}");
        }
        for sql in [
            &statements.save,
            &statements.save_in_line,
            &statements.delete,
            &statements.exists,
            &statements.extend,
            &statements.sweep,
            &statements.probe,
            &statements.create_table,
        ] {
            assert!(sql.contains("statement_timestamp()"), "{sql}");
        }
        for sql in [
            &statements.save_in_line,
            &statements.delete,
            &statements.force_delete,
            &statements.sweep_line,
            &statements.create_table,
        ] {
            assert!(sql.contains("\"app\".\"locks_waiters\""), "{sql}");
        }
        assert!(
            !statements.save.contains("locks_waiters"),
            "a plain take does not read the line: {}",
            statements.save
        );
    }

    #[test]
    fn hand_overs_reserve_cut_to_the_window_and_announce_on_the_waiters_store_channel() {
        let statements = statements("app.locks");
        let function = "\"app\".\"locks_hand_over\"";
        let create = &statements.create_table;
        assert!(
            create.contains(&format!(
                "CREATE OR REPLACE FUNCTION {function}(text, text)"
            )),
            "{create}"
        );
        assert!(
            create.contains(
                "pg_notify('verrou:' || split_part(place.\"waiter\", '.', 1), \
                 place.\"waiter\" || ' ' || place.\"key\")"
            ),
            "{create}"
        );
        assert!(create.contains("chr(1) || \"waiter\""), "{create}");
        assert!(
            create.contains("clock_timestamp()) * 1000)::bigint) + 100)"),
            "the window counts from the hand-over: {create}"
        );
        assert!(
            create.contains("least(place.\"deadline\", reserved_until)"),
            "the front's place ends with its reservation: {create}"
        );
        assert!(create.contains("LIMIT 1 FOR UPDATE)"), "{create}");
        for sql in [&statements.delete, &statements.force_delete] {
            assert!(sql.contains(&format!("{function}($1, NULL)")), "{sql}");
        }
        assert_eq!(statements.leave_line, format!("SELECT {function}($1, $2)"));
        assert!(statements.save_in_line.contains("chr(1) || $4::text"));
        for sql in [&statements.save, &statements.save_in_line] {
            assert!(!sql.contains("pg_notify"), "{sql}");
        }
        let (plain, in_line) = (&statements.save, &statements.save_in_line);
        assert!(!plain.contains("hand_over"), "{plain}");
        let hand_over = format!("{function}($1, NULL)");
        assert!(in_line.contains(&hand_over), "{in_line}");
    }
}
