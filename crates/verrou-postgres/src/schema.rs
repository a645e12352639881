//! Making sure the lock table, its fencing-token sequence, its waiting line (with its
//! hand-over function) and its shares table exist, and reading what its key column holds.

use deadpool_postgres::tokio_postgres::Error as DriverError;
use deadpool_postgres::Client;
use verrou_core::{Error, Result};

use crate::error::setup_failed;
use crate::identifier::TableName;
use crate::sql::{Statements, CREATION_LOCK, KEY_COLUMN_LENGTH, MISSING_OR_OUTDATED};

/// Checks that the table, its sequence, its waiting line, its hand-over function and its
/// shares table exist, and that the function is this version's; creates what is missing
/// and replaces a function another version of verrou made, if `create` allows it
/// (otherwise either is [`Error::InvalidConfig`], whose message has the statements that
/// create and replace them). An outdated function would still hand keys over, but may
/// announce them where this version's stores do not listen: their waiters would then wait
/// for the look again each second instead of a round trip.
pub(crate) async fn ensure_table(
    client: &mut Client,
    table: &TableName,
    statements: &Statements,
    create: bool,
) -> Result<()> {
    let quoted = table.quoted();
    let names = [
        quoted,
        table.sequence_quoted(),
        table.line_quoted(),
        table.shares_quoted(),
    ];
    let functions = [format!("{}(text, text)", table.hand_over_quoted())];
    let sources = [statements.hand_over_source.as_str()];
    let found: Vec<(String, bool)> = client
        .query(
            MISSING_OR_OUTDATED,
            &[
                &names.as_slice(),
                &functions.as_slice(),
                &sources.as_slice(),
            ],
        )
        .await
        .and_then(|rows| {
            rows.iter()
                .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                .collect()
        })
        .map_err(|error| setup_failed(format!("could not look up table {quoted}"), error))?;
    if found.is_empty() {
        return Ok(());
    }
    if !create {
        let (outdated, missing): (Vec<_>, Vec<_>) = found.iter().partition(|(_, exists)| *exists);
        let mut problems = Vec::new();
        for (objects, problem) in [
            (missing, "does not exist"),
            (outdated, "is another version's"),
        ] {
            if !objects.is_empty() {
                let names: Vec<&str> = objects.iter().map(|(name, _)| name.as_str()).collect();
                problems.push(format!("{} {problem}", names.join(", ")));
            }
        }
        return Err(Error::InvalidConfig(format!(
            "{} and create_table is off; create or replace it with: {}",
            problems.join("; "),
            statements.create_table
        )));
    }
    create_table(client, table, &statements.create_table)
        .await
        .map_err(|error| setup_failed(format!("could not create table {quoted}"), error))
}

/// How many characters the key column of `table` holds when it is declared with a length
/// (`varchar(255)` in a table the Node.js library created); `None` when unbounded (`text`).
pub(crate) async fn key_column_length(client: &Client, table: &TableName) -> Result<Option<usize>> {
    let quoted = table.quoted();
    let length: Option<i32> = client
        .query_opt(KEY_COLUMN_LENGTH, &[&quoted])
        .await
        .and_then(|row| row.map(|row| row.try_get(0)).transpose())
        .map_err(|error| {
            setup_failed(
                format!("could not read the key column of table {quoted}"),
                error,
            )
        })?;
    Ok(length.and_then(|length| usize::try_from(length).ok()))
}

/// Creates the table, its sequence, its line, its hand-over function and its shares table,
/// serialized between processes: `CREATE ... IF NOT EXISTS` alone races on the catalog (two
/// sessions creating the same name at once, one of them fails with a unique violation on
/// `pg_type`; two replacing one function, with "tuple concurrently updated"), so creators
/// queue on an advisory lock held until their transaction ends, and each one after the
/// first finds them there.
async fn create_table(
    client: &mut Client,
    table: &TableName,
    create: &str,
) -> Result<(), DriverError> {
    let transaction = client.transaction().await?;
    let lock_name = format!("verrou create table {}", table.quoted());
    transaction.execute(CREATION_LOCK, &[&lock_name]).await?;
    transaction.batch_execute(create).await?;
    transaction.commit().await
}
