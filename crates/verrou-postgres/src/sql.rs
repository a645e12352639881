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

use verrou_core::Result;

use crate::announce::Announcements;
use crate::identifier::TableName;

/// The server's current time in epoch milliseconds (rounded down), the unit of the
/// `expiration` column.
const NOW_MS: &str = "floor(date_part('epoch', statement_timestamp()) * 1000)::bigint";

/// The server's current time in epoch milliseconds rounded up: the base of every written
/// expiration (plus the TTL).
const EXPIRES_FROM_NOW: &str = "ceil(date_part('epoch', statement_timestamp()) * 1000)::bigint";

/// The most rows one sweep statement deletes, so it never holds many row locks for long.
pub(crate) const SWEEP_BATCH: i64 = 1000;

/// Every statement a store runs, with its table name quoted in.
#[derive(Debug)]
pub(crate) struct Statements {
    /// Takes a free or expired key. Params: key, owner, ttl ms (null: never expires).
    /// Returns the grant's fencing token (one `bigint` row) when granted, no row when busy.
    ///
    /// The token is drawn in `RETURNING`, while this statement holds the key's row: a
    /// later grant of the key can only draw after this statement has committed, so its
    /// token is greater, even if the row is deleted in between (release, sweep). Drawing in
    /// `VALUES` instead would draw before waiting for the row and could hand out a stale,
    /// smaller token.
    pub(crate) save: String,
    /// Releases a live lock held by the owner, and deletes the key's row if it has expired
    /// whoever held it. Params: key, owner, key id (see `Announcements::key_id`). Returns
    /// no row when nothing was deleted, else one row of two booleans: whether the owner's
    /// live lock was released, and whether someone waited for the key (the release was
    /// announced, see [`ANNOUNCE`]).
    pub(crate) delete: String,
    /// Deletes a key whoever holds it, and announces it. Params: key, key id. One row
    /// (whether it announced) if a row was deleted.
    pub(crate) force_delete: String,
    /// Whether a key is held and unexpired. Params: key. Returns one boolean.
    pub(crate) exists: String,
    /// Moves a live lock's expiration if the owner holds it. Params: key, owner, ttl ms.
    /// One row (`true`): extended; none: not the owner's (or expired).
    pub(crate) extend: String,
    /// Deletes up to a batch of expired rows, skipping rows other statements have locked.
    /// Params: batch size. Returns one row: how many it deleted.
    pub(crate) sweep: String,
    /// Creates the table and its fencing-token sequence where they do not exist. No params;
    /// several statements, for `batch_execute`.
    pub(crate) create_table: String,
    /// Subscribes the listener's session to the table's announcements. No params.
    pub(crate) listen: String,
    /// Takes the session-level shared advisory locks of keys that have waiters here, so
    /// that their releases announce themselves; never waits. Params: key ids (`bigint[]`).
    /// One row per id: the id and whether its lock was taken (false: someone holds it
    /// exclusively, most likely a release of that key committing right now).
    pub(crate) register: String,
    /// Which of the given keys are free now. Run after `register`, in a statement of its
    /// own so that it sees every release committed before the locks were taken (a release
    /// committing later sees the lock and announces itself). Params: key ids (`bigint[]`),
    /// keys (`text[]`), in the same order. One row per free key: its id.
    pub(crate) probe: String,
    /// Gives back advisory locks taken by `register`. Params: key ids (`bigint[]`).
    pub(crate) unregister: String,
}

/// How `delete` and `force_delete` announce a release, evaluated on the row they deleted,
/// while they hold it: if taking the key's advisory lock exclusively fails, some session
/// holds it shared (the listener of a store whose waiters wait for the key), and the release
/// is announced on the table's channel with the key id as payload; the notification goes
/// out when the statement commits. The expression is true when it announced. An
/// uncontended release takes and drops one advisory lock and sends nothing, sparing the
/// server `NOTIFY`'s serialized commits. `CASE` fixes the order; `pg_notify` returns
/// `void`, whose text is empty. (A `(SELECT true FROM pg_notify(...))` sub-select reads
/// better but costs the server a third more per release, measured at 64 in flight.)
/// `{channel}` and `{id}` are filled in.
const ANNOUNCE: &str = "CASE WHEN pg_try_advisory_xact_lock({id}) THEN false \
     ELSE pg_notify('{channel}', {id}::text)::text = '' END";

impl Statements {
    /// Builds the statements for `table`, announcing releases as `announcements` says.
    pub(crate) fn new(table: &TableName, announcements: &Announcements) -> Self {
        let sequence = table.sequence_quoted();
        let table = table.quoted();
        let channel = announcements.channel();
        let announce = |id: &str| ANNOUNCE.replace("{id}", id).replace("{channel}", channel);
        let live = format!("(\"expiration\" IS NULL OR \"expiration\" > {NOW_MS})");
        let expired = format!("\"expiration\" <= {NOW_MS}");
        Self {
            save: format!(
                "INSERT INTO {table} AS held (\"key\", \"owner\", \"expiration\") \
                 VALUES ($1, $2, {EXPIRES_FROM_NOW} + $3::bigint) \
                 ON CONFLICT (\"key\") DO UPDATE \
                 SET \"owner\" = excluded.\"owner\", \"expiration\" = excluded.\"expiration\" \
                 WHERE held.{expired} \
                 RETURNING nextval('{sequence}')"
            ),
            delete: format!(
                "DELETE FROM {table} WHERE \"key\" = $1 AND (\"owner\" = $2 OR {expired}) \
                 RETURNING \"owner\" = $2 AND {live}, {}",
                announce("$3")
            ),
            force_delete: format!(
                "DELETE FROM {table} WHERE \"key\" = $1 RETURNING {}",
                announce("$2")
            ),
            exists: format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE \"key\" = $1 AND {live})"),
            extend: format!(
                "UPDATE {table} SET \"expiration\" = {EXPIRES_FROM_NOW} + $3::bigint \
                 WHERE \"key\" = $1 AND \"owner\" = $2 AND {live} RETURNING true"
            ),
            sweep: format!(
                "WITH swept AS (DELETE FROM {table} WHERE ctid = ANY (ARRAY(\
                 SELECT ctid FROM {table} WHERE {expired} LIMIT $1 FOR UPDATE SKIP LOCKED)) \
                 AND {expired} RETURNING 1) SELECT count(*) FROM swept"
            ),
            create_table: format!(
                "CREATE TABLE IF NOT EXISTS {table} (\
                 \"key\" text PRIMARY KEY, \"owner\" text NOT NULL, \"expiration\" bigint); \
                 CREATE SEQUENCE IF NOT EXISTS {sequence}"
            ),
            listen: format!("LISTEN \"{channel}\""),
            register: "SELECT id, pg_try_advisory_lock_shared(id) FROM unnest($1::bigint[]) AS id"
                .to_owned(),
            probe: format!(
                "SELECT w.id FROM unnest($1::bigint[], $2::text[]) AS w (id, key) \
                 WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE \"key\" = w.key AND {live})"
            ),
            unregister: "SELECT pg_advisory_unlock_shared(id) FROM unnest($1::bigint[]) AS id"
                .to_owned(),
        }
    }
}

/// Whether the relations with the quoted names in params 1 (the table) and 2 (its
/// sequence) exist, resolved like the statements resolve them (through `search_path` when
/// unqualified). Returns two booleans.
pub(crate) const OBJECTS_EXIST: &str =
    "SELECT to_regclass($1) IS NOT NULL, to_regclass($2) IS NOT NULL";

/// The declared length, in characters, of the `key` column of the table whose quoted name
/// is in param 1 (resolved like [`OBJECTS_EXIST`] resolves it), when the column is
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

    #[test]
    fn statements_use_the_quoted_table_and_the_server_clock() {
        let table = TableName::parse("app.locks").expect("valid name");
        let statements = Statements::new(&table, &Announcements::new(&table));
        for sql in [
            &statements.save,
            &statements.delete,
            &statements.exists,
            &statements.extend,
            &statements.sweep,
            &statements.probe,
        ] {
            assert!(sql.contains("\"app\".\"locks\""), "{sql}");
            assert!(sql.contains("statement_timestamp()"), "{sql}");
        }
    }

    #[test]
    fn releases_announce_on_the_tables_channel() {
        let table = TableName::parse("app.locks").expect("valid name");
        let statements = Statements::new(&table, &Announcements::new(&table));
        let announce = |id: &str| {
            format!(
                "CASE WHEN pg_try_advisory_xact_lock({id}) THEN false \
                 ELSE pg_notify('verrou:app.locks', {id}::text)::text = '' END"
            )
        };
        assert!(statements.delete.ends_with(&announce("$3")));
        assert!(statements.force_delete.ends_with(&announce("$2")));
        assert_eq!(statements.listen, "LISTEN \"verrou:app.locks\"");
    }
}
