//! Fencing tokens never go back, even across a crash of the server: a token reaches its
//! holder only once its grant has committed, and a synchronous commit makes the sequence's
//! advance durable with it.

mod common;

use std::time::{Duration, Instant};

use common::{private_server, token, unique};
use verrou_core::{LockStore, OwnerCheck};
use verrou_postgres::{PostgresConfig, PostgresStore};

/// How many grants before the crash: several times the 32 values a sequence logs ahead.
const GRANTS: usize = 200;

/// How long the store may take to reach the restarted server.
const RECONNECT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_tokens_keep_rising_across_a_server_crash() {
    let mut server = private_server();
    let store = PostgresStore::connect({
        let mut config = PostgresConfig::new(server.url());
        config.command_timeout = Duration::from_secs(1);
        config.sweep_interval = None;
        config
    })
    .await
    .expect("store");
    let setting: String = store
        .pool()
        .get()
        .await
        .expect("a connection")
        .query_one("SHOW synchronous_commit", &[])
        .await
        .expect("the setting")
        .get(0);
    assert_eq!(setting, "on", "the guarantee needs synchronous commits");

    // Grant the key over and over; the last holder keeps it through the crash.
    let key = unique("fenced");
    let mut tokens: Vec<u64> = Vec::with_capacity(GRANTS);
    let mut owner = String::new();
    for round in 0..GRANTS {
        owner = format!("holder{round}");
        let granted = token(store.save(&key, &owner, None).await.expect("save"));
        if let Some(last) = tokens.last() {
            assert!(granted > *last, "token {granted} after {last}");
        }
        tokens.push(granted);
        if round + 1 < GRANTS {
            let released = store.delete(&key, &owner).await.expect("delete");
            assert_eq!(released, OwnerCheck::Applied);
        }
    }
    let highest = tokens.iter().copied().max().expect("tokens");

    // An immediate shutdown, straight after the last grant: no checkpoint, crash recovery
    // at the next start.
    server.crash();
    server
        .restart()
        .expect("the server restarts after crash recovery");

    // The same store reconnects by itself; the lock granted last survived the crash.
    let deadline = Instant::now() + RECONNECT;
    let held = loop {
        match store.exists(&key).await {
            Ok(held) => break held,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "the store did not reach the restarted server: {error:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(held, "the last grant was committed before the crash");
    assert_eq!(
        store.delete(&key, &owner).await.expect("delete"),
        OwnerCheck::Applied
    );

    let after = token(
        store
            .save(&key, "after the crash", None)
            .await
            .expect("save"),
    );
    assert!(
        after > highest,
        "the first token after the crash, {after}, is not above every earlier one ({highest})"
    );
}
