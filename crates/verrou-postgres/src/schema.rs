//! Making sure the lock table and its fencing-token sequence exist, and reading what its key
//! column holds.

use deadpool_postgres::tokio_postgres::Error as DriverError;
use deadpool_postgres::Client;
use verrou_core::{Error, Result};

use crate::error::setup_failed;
use crate::identifier::TableName;
use crate::sql::{Statements, CREATION_LOCK, KEY_COLUMN_LENGTH, OBJECTS_EXIST};

/// Checks that the table and its sequence exist, and creates them if they do not and
/// `create` allows it (otherwise a missing one is [`Error::InvalidConfig`]).
pub(crate) async fn ensure_table(
    client: &mut Client,
    table: &TableName,
    statements: &Statements,
    create: bool,
) -> Result<()> {
    let (quoted, sequence) = (table.quoted(), table.sequence_quoted());
    let (table_exists, sequence_exists): (bool, bool) = client
        .query_one(OBJECTS_EXIST, &[&quoted, &sequence])
        .await
        .and_then(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .map_err(|error| setup_failed(format!("could not look up table {quoted}"), error))?;
    if table_exists && sequence_exists {
        return Ok(());
    }
    if !create {
        let missing = if table_exists {
            format!("the fencing-token sequence {sequence} (CREATE SEQUENCE {sequence})")
        } else {
            format!("table {quoted}")
        };
        return Err(Error::InvalidConfig(format!(
            "{missing} does not exist and create_table is off"
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

/// Creates the table and its sequence, serialized between processes: `CREATE ... IF NOT
/// EXISTS` alone races on the catalog (two sessions creating the same name at once, one of
/// them fails with a unique violation on `pg_type`), so creators queue on an advisory lock
/// held until their transaction ends, and each one after the first finds them there.
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
