//! The resource side of fencing: a PostgreSQL table that refuses writes carrying a fencing
//! token older than the newest it has seen, so a holder that lost its lock during a pause
//! cannot overwrite the work of the next holder. The README shows the same statement.

use std::time::Duration;

use verrou::postgres::{deadpool_postgres, PostgresConfig, PostgresStore};
use verrou::{LockFactory, LockGuard};

/// The fenced write: applied only if `$3` (the writer's token) is newer than the last one.
const FENCED_WRITE: &str =
    "UPDATE fenced_accounts SET balance = $2, fence = $3 WHERE id = $1 AND fence < $3";

async fn write(
    client: &deadpool_postgres::Client,
    account: &str,
    balance: i64,
    guard: &LockGuard,
) -> bool {
    let token = i64::try_from(guard.fencing_token().expect("stores issue tokens")).unwrap();
    client
        .execute(FENCED_WRITE, &[&account, &balance, &token])
        .await
        .unwrap()
        == 1
}

#[tokio::test]
async fn a_paused_holders_fenced_write_is_refused() {
    let store = PostgresStore::connect(PostgresConfig::new(verrou_testkit::postgres_url()))
        .await
        .unwrap();
    let client = store.pool().get().await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS fenced_accounts \
             (id text PRIMARY KEY, balance bigint NOT NULL, fence bigint NOT NULL DEFAULT 0)",
        )
        .await
        .unwrap();
    let account = format!("account-{}", std::process::id());
    client
        .execute(
            "INSERT INTO fenced_accounts (id, balance) VALUES ($1, 100)",
            &[&account],
        )
        .await
        .unwrap();
    let factory = LockFactory::new(store.clone());
    let key = format!("fencing:{account}");

    // The first holder takes the lock, then stalls past its TTL (a GC pause, a slow disk).
    let stalled = factory.create_lock_with_ttl(&key, 200).unwrap();
    let stalled = stalled.acquire_guard().await.unwrap().expect("free key");
    tokio::time::sleep(Duration::from_millis(400)).await;

    // Meanwhile the lock expired; the next holder takes it with a newer token and writes.
    let next = factory.create_lock_with_ttl(&key, "10s").unwrap();
    let next = next
        .acquire_guard()
        .await
        .unwrap()
        .expect("expired lock is free");
    assert!(next.fencing_token() > stalled.fencing_token());
    assert!(
        write(&client, &account, 50, &next).await,
        "the current holder's write applies"
    );

    // The stalled holder wakes up and writes: its older token is refused.
    assert!(
        !write(&client, &account, 0, &stalled).await,
        "the stale write must be refused"
    );
    let balance: i64 = client
        .query_one(
            "SELECT balance FROM fenced_accounts WHERE id = $1",
            &[&account],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(balance, 50);
    next.release().await.unwrap();
}
