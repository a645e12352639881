//! PostgreSQL-specific behaviour on the shared test server (`VERROU_POSTGRES_URL`, or a
//! private cluster for this test process). Every test works on tables of its own.

mod common;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    chain, client, config, invalid_config, row_locked, server_now_ms, store, unique, Row,
};
use tokio::sync::Barrier;
use verrou_core::{Acquisition, Error, LockStore, OwnerCheck};
use verrou_postgres::deadpool_postgres::{Config as PoolConfig, Pool, Runtime};
use verrou_postgres::tokio_postgres::NoTls;
use verrou_postgres::{PostgresConfig, PostgresOptions, PostgresStore};

fn granted(acquisition: Acquisition) -> bool {
    matches!(acquisition, Acquisition::Granted(_))
}

#[tokio::test]
async fn injected_table_name_is_rejected_before_anything_runs() {
    let injected = "verrou; drop table users";
    let message = invalid_config(
        PostgresStore::connect({
            let mut config = PostgresConfig::new("postgres://nobody@127.0.0.1:1/none");
            config.table = injected.into();
            config
        })
        .await,
    );
    assert!(message.contains(injected), "{message}");
    assert!(message.contains("';' is not allowed"), "{message}");

    let pool = PoolConfig {
        url: Some(verrou_testkit::postgres_url()),
        ..PoolConfig::default()
    }
    .create_pool(Some(Runtime::Tokio1), NoTls)
    .expect("a pool");
    for bad in [injected, "", "a.b.c", "9lives", "x\"y", "public.\"verrou\""] {
        let mut options = PostgresOptions::default();
        options.table = bad.into();
        let message = invalid_config(PostgresStore::from_pool(pool.clone(), options).await);
        assert!(message.contains("invalid table name"), "{bad:?}: {message}");
    }
}

#[tokio::test]
async fn unreachable_server_is_a_storage_error_that_says_where() {
    let mut config = PostgresConfig::new("postgres://app:s3cret@127.0.0.1:1/app");
    config.connect_timeout = Duration::from_secs(2);
    let error = PostgresStore::connect(config)
        .await
        .expect_err("nothing listens on port 1");
    assert!(matches!(error, Error::Storage { .. }), "{error:?}");
    let chain = chain(&error);
    assert!(
        chain.contains("could not reach PostgreSQL at postgres://app:***@127.0.0.1:1/app"),
        "{chain}"
    );
    assert!(!chain.contains("s3cret"), "{chain}");
}

#[tokio::test]
async fn store_from_an_existing_pool_with_create_table_off_needs_the_table() {
    let url = verrou_testkit::postgres_url();
    let pool = PoolConfig {
        url: Some(url.clone()),
        ..PoolConfig::default()
    }
    .create_pool(Some(Runtime::Tokio1), NoTls)
    .expect("a pool");
    let table = unique("from_pool");
    let mut options = PostgresOptions::default();
    options.table = table.clone();
    options.create_table = false;
    let message = invalid_config(PostgresStore::from_pool(pool.clone(), options.clone()).await);
    assert!(
        message.contains("does not exist and create_table is off"),
        "{message}"
    );

    let client = client(&url).await;
    client
        .batch_execute(&format!(
            "CREATE TABLE \"{table}\" (key text PRIMARY KEY, owner text NOT NULL, expiration bigint)"
        ))
        .await
        .expect("table created by hand");
    let message = invalid_config(PostgresStore::from_pool(pool.clone(), options.clone()).await);
    assert!(
        message.starts_with(&format!(
            "\"{table}_fencing_seq\", \"{table}_waiters\", \"{table}_shares\", \
             \"{table}_hand_over\"(text, text) does not exist"
        )),
        "{message}"
    );
    let (_, create) = message
        .split_once("create or replace it with: ")
        .expect("the statements that create what is missing");
    client
        .batch_execute(create)
        .await
        .expect("the statements the message gives");
    let store = PostgresStore::from_pool(pool, options)
        .await
        .expect("the table, its sequence, its line, its function and its shares table exist now");
    assert!(granted(store.save("k", "me", None).await.expect("save")));
    assert!(store.exists("k").await.expect("exists"));
}

/// The source of `table`'s hand-over function on the server at `url`, and the transaction
/// that wrote it last.
async fn hand_over_source(url: &str, table: &str) -> (String, String) {
    let row = client(url)
        .await
        .query_one(
            "SELECT prosrc, xmin::text FROM pg_proc WHERE oid = to_regprocedure($1)",
            &[&format!("\"{table}_hand_over\"(text, text)")],
        )
        .await
        .expect("the hand-over function exists");
    (row.get(0), row.get(1))
}

/// A hand-over function left by another version of verrou (here: one that hands nothing
/// over) is replaced when a store starts, or named in the startup error when the store may
/// not create.
#[tokio::test]
async fn a_hand_over_function_of_another_version_is_replaced() {
    let url = verrou_testkit::postgres_url();
    let table = unique("other_version");
    store(&table).await;
    let current = hand_over_source(&url, &table).await;
    store(&table).await;
    assert_eq!(
        hand_over_source(&url, &table).await,
        current,
        "this version's function is left as it is"
    );
    let other_version = format!(
        "CREATE OR REPLACE FUNCTION \"{table}_hand_over\"(text, text) RETURNS text \
         LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$"
    );
    let admin = client(&url).await;
    admin
        .batch_execute(&other_version)
        .await
        .expect("another version's function");

    let mut options = config(&table);
    options.create_table = false;
    let message = invalid_config(PostgresStore::connect(options).await);
    assert!(
        message.starts_with(&format!(
            "\"{table}_hand_over\"(text, text) is another version's and create_table is off"
        )),
        "{message}"
    );
    assert_ne!(hand_over_source(&url, &table).await.0, current.0);

    store(&table).await;
    assert_eq!(
        hand_over_source(&url, &table).await.0,
        current.0,
        "a store that may create puts this version's function back"
    );
}

#[tokio::test]
async fn schema_qualified_and_mixed_case_tables_work() {
    let url = verrou_testkit::postgres_url();
    let schema = unique("schema");
    client(&url)
        .await
        .batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
        .await
        .expect("schema");
    let table = format!("{schema}.Locks");
    let store = store(&table).await;
    assert!(granted(
        store
            .save("k", "me", Some(Duration::from_secs(30)))
            .await
            .expect("save")
    ));
    let rows: i64 = client(&url)
        .await
        .query_one(&format!("SELECT count(*) FROM \"{schema}\".\"Locks\""), &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 1, "the row lives in the quoted, case-kept table");
}

/// Sixteen pools with a connection each, so the stores built on them start at the same
/// instant and their table creation really races.
async fn warm_pools(url: &str) -> Vec<Pool> {
    let mut pools = Vec::new();
    for _ in 0..16 {
        let pool = PoolConfig {
            url: Some(url.to_owned()),
            ..PoolConfig::default()
        }
        .create_pool(Some(Runtime::Tokio1), NoTls)
        .expect("a pool");
        drop(pool.get().await.expect("a connection"));
        pools.push(pool);
    }
    pools
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_stores_created_at_once_on_a_fresh_table_all_succeed() {
    let url = verrou_testkit::postgres_url();
    for _round in 0..5 {
        let schema = unique("fresh");
        client(&url)
            .await
            .batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
            .await
            .expect("schema");
        let mut options = PostgresOptions::default();
        options.table = format!("{schema}.verrou");
        let start = Arc::new(Barrier::new(16));
        let starts: Vec<_> = warm_pools(&url)
            .await
            .into_iter()
            .map(|pool| {
                let (options, start) = (options.clone(), Arc::clone(&start));
                tokio::spawn(async move {
                    start.wait().await;
                    PostgresStore::from_pool(pool, options).await
                })
            })
            .collect();
        let mut stores = Vec::new();
        for start in starts {
            stores.push(start.await.expect("task").expect("every store starts"));
        }
        let key = unique("key");
        let mut grants = 0;
        for (index, store) in stores.iter().enumerate() {
            let owner = format!("owner{index}");
            grants += usize::from(granted(store.save(&key, &owner, None).await.expect("save")));
        }
        assert_eq!(grants, 1, "all sixteen stores share the one table");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_follows_the_server_clock() {
    let url = verrou_testkit::postgres_url();
    let table = unique("clock");
    let store = store(&table).await;
    let client = client(&url).await;

    // The expiration written is the server's now plus the TTL.
    assert!(granted(
        store
            .save("mine", "me", Some(Duration::from_secs(60)))
            .await
            .expect("save")
    ));
    let remaining: i64 = client
        .query_one(
            &format!(
                "SELECT expiration - floor(extract(epoch from clock_timestamp()) * 1000)::bigint \
                 FROM \"{table}\" WHERE key = 'mine'"
            ),
            &[],
        )
        .await
        .expect("row")
        .get(0);
    assert!(
        (58_000..=60_000).contains(&remaining),
        "{remaining} ms left by the server's clock"
    );

    // Rows written by someone else with the server's clock are read by the server's clock.
    let now = server_now_ms(&client).await;
    let insert =
        format!("INSERT INTO \"{table}\" (key, owner, expiration) VALUES ($1, 'other', $2)");
    client
        .execute(&insert, &[&"live", &(now + 1_500)])
        .await
        .expect("insert");
    client
        .execute(&insert, &[&"stale", &(now - 1)])
        .await
        .expect("insert");
    assert!(store.exists("live").await.expect("exists"));
    assert!(!store.exists("stale").await.expect("exists"));
    assert_eq!(
        store.save("live", "me", None).await.expect("save"),
        Acquisition::Busy
    );
    assert_eq!(
        store
            .extend("stale", "other", Duration::from_secs(5))
            .await
            .expect("extend"),
        OwnerCheck::NotOwner
    );
    assert!(granted(
        store.save("stale", "me", None).await.expect("save")
    ));

    // Once the server's clock passes the expiration, the key is free.
    while server_now_ms(&client).await < now + 1_500 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!store.exists("live").await.expect("exists"));
    assert!(granted(store.save("live", "me", None).await.expect("save")));
}

/// Releasing an expired lock is refused, to its owner as to anyone, and leaves the row
/// alone: the next take reuses it (rows nobody takes again are swept, see below).
#[tokio::test]
async fn releasing_an_expired_lock_is_refused_and_leaves_its_row_to_the_next_take() {
    let url = verrou_testkit::postgres_url();
    let table = unique("release_expired");
    let store = store(&table).await;
    assert!(granted(
        store
            .save("k", "me", Some(Duration::from_millis(50)))
            .await
            .expect("save")
    ));
    tokio::time::sleep(Duration::from_millis(150)).await;
    for owner in ["me", "someone"] {
        assert_eq!(
            store.delete("k", owner).await.expect("delete"),
            OwnerCheck::NotOwner
        );
    }
    let client = client(&url).await;
    let owners = || async {
        client
            .query(&format!("SELECT owner FROM \"{table}\""), &[])
            .await
            .expect("the rows")
            .iter()
            .map(|row| row.get(0))
            .collect::<Vec<String>>()
    };
    assert_eq!(owners().await, ["me"], "the expired row is left");
    assert!(granted(store.save("k", "next", None).await.expect("save")));
    assert_eq!(owners().await, ["next"], "the take reused it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_rows_nobody_takes_over_are_swept() {
    let url = verrou_testkit::postgres_url();
    let table = unique("sweep");
    let store = PostgresStore::connect({
        let mut config = config(&table);
        config.sweep_interval = Some(Duration::from_millis(100));
        config
    })
    .await
    .expect("store");
    let client = client(&url).await;
    client
        .execute(
            &format!(
                "INSERT INTO \"{table}\" (key, owner, expiration) \
                 SELECT 'crashed' || i, 'gone', floor(extract(epoch from now()) * 1000)::bigint - 1000 \
                 FROM generate_series(1, 2500) AS i"
            ),
            &[],
        )
        .await
        .expect("expired rows");
    assert!(granted(store.save("live", "me", None).await.expect("save")));
    let count = format!("SELECT count(*) FROM \"{table}\"");
    let mut rows: i64 = 2501;
    for _ in 0..100 {
        rows = client.query_one(&count, &[]).await.expect("count").get(0);
        if rows == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = store
            .save("poke", "me", Some(Duration::from_secs(60)))
            .await
            .expect("save");
        client
            .execute(&format!("DELETE FROM \"{table}\" WHERE key = 'poke'"), &[])
            .await
            .expect("delete");
    }
    assert_eq!(rows, 1, "only the live lock is left");
    assert!(store.exists("live").await.expect("exists"));
}

/// A lock table is small after a vacuum, and grows with the dead rows of its churn until
/// the next: a plan the planner would cache there reads the whole table for one key. The
/// store's statements find their rows through the index whatever the table's size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_vacuum_no_statement_reads_the_whole_lock_table() {
    let url = verrou_testkit::postgres_url();
    let table = unique("vacuumed");
    let mut config = config(&table);
    config.sweep_interval = None;
    let store = PostgresStore::connect(config).await.expect("store");
    let admin = client(&url).await;
    assert!(granted(store.save("k0", "me", None).await.expect("save")));
    store.delete("k0", "me").await.expect("delete");
    admin
        .batch_execute(&format!("VACUUM \"{table}\""))
        .await
        .expect("vacuum");
    // Enough calls of each statement on each connection for its plan to be cached.
    let cycles = 200;
    for cycle in 0..cycles {
        let key = format!("k{}", cycle % 8);
        assert!(granted(store.save(&key, "me", None).await.expect("save")));
        assert!(store.exists(&key).await.expect("exists"));
        assert_eq!(
            store.delete(&key, "me").await.expect("delete"),
            OwnerCheck::Applied
        );
    }
    // The pool's sessions report their statistics when they end.
    drop(store);
    let stats = "SELECT seq_scan, idx_scan, n_tup_del FROM pg_stat_user_tables WHERE relname = $1";
    let deadline = Instant::now() + Duration::from_secs(20);
    let (seq_scans, index_scans) = loop {
        let row = admin.query_one(stats, &[&table]).await.expect("stats");
        let (seq_scans, index_scans, deleted): (i64, i64, i64) =
            (row.get(0), row.get(1), row.get(2));
        if deleted >= cycles || Instant::now() > deadline {
            break (seq_scans, index_scans);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(index_scans >= 2 * cycles, "{index_scans} index scans");
    // One: building the primary key when the store created the table reads it.
    assert!(
        seq_scans <= 1,
        "{seq_scans} statements read the whole table"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_separate_stores_exclude_each_other_with_rising_fencing_tokens() {
    let table = unique("exclusion");
    let stores: [Arc<PostgresStore>; 2] =
        [Arc::new(store(&table).await), Arc::new(store(&table).await)];
    let key = unique("key");
    let holders = Arc::new(AtomicUsize::new(0));
    let turns = Arc::new(AtomicUsize::new(0));
    let last_token = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for worker in 0..16 {
        let store = Arc::clone(&stores[worker % 2]);
        let (key, holders, turns) = (key.clone(), Arc::clone(&holders), Arc::clone(&turns));
        let last_token = Arc::clone(&last_token);
        tasks.push(tokio::spawn(async move {
            let owner = format!("worker{worker}");
            let mut mine = 0;
            while mine < 10 {
                let ttl = Some(Duration::from_secs(30));
                let Acquisition::Granted(grant) =
                    store.save(&key, &owner, ttl).await.expect("save")
                else {
                    tokio::task::yield_now().await;
                    continue;
                };
                assert_eq!(
                    holders.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two holders at once"
                );
                let token = grant.fencing_token.expect("a fencing token");
                let previous = last_token.swap(token, Ordering::SeqCst);
                assert!(token > previous, "token {token} granted after {previous}");
                tokio::time::sleep(Duration::from_millis(1)).await;
                holders.fetch_sub(1, Ordering::SeqCst);
                assert_eq!(
                    store.delete(&key, &owner).await.expect("delete"),
                    OwnerCheck::Applied
                );
                turns.fetch_add(1, Ordering::SeqCst);
                mine += 1;
            }
        }));
    }
    for task in tasks {
        task.await.expect("worker");
    }
    assert_eq!(turns.load(Ordering::SeqCst), 160);
}

#[tokio::test]
async fn table_created_by_the_node_library_works() {
    let url = verrou_testkit::postgres_url();
    let table = unique("node_layout");
    let client = client(&url).await;
    // The layout @verrou/core's database store creates (knex: string(255), bigint).
    client
        .batch_execute(&format!(
            "CREATE TABLE \"{table}\" (\"key\" varchar(255) NOT NULL, \"owner\" varchar(255) NOT NULL, \
             \"expiration\" bigint, CONSTRAINT \"{table}_pkey\" PRIMARY KEY (\"key\"))"
        ))
        .await
        .expect("node table");
    let store = store(&table).await;

    let ttl = Some(Duration::from_secs(30));
    assert!(granted(store.save("job", "rust", ttl).await.expect("save")));
    assert_eq!(
        store.save("job", "other", ttl).await.expect("save"),
        Acquisition::Busy
    );
    assert!(store.exists("job").await.expect("exists"));
    assert_eq!(
        store
            .extend("job", "rust", Duration::from_secs(60))
            .await
            .expect("extend"),
        OwnerCheck::Applied
    );
    assert_eq!(
        store.delete("job", "other").await.expect("delete"),
        OwnerCheck::NotOwner
    );
    assert_eq!(
        store.delete("job", "rust").await.expect("delete"),
        OwnerCheck::Applied
    );
    assert!(!store.exists("job").await.expect("exists"));

    // A lock the Node.js library wrote (expiration in epoch ms) holds against us.
    let now = server_now_ms(&client).await;
    client
        .execute(
            &format!("INSERT INTO \"{table}\" (key, owner, expiration) VALUES ('node', 'node-owner', $1)"),
            &[&(now + 30_000)],
        )
        .await
        .expect("node lock");
    assert_eq!(
        store.save("node", "rust", ttl).await.expect("save"),
        Acquisition::Busy
    );
    assert_eq!(
        store.delete("node", "node-owner").await.expect("delete"),
        OwnerCheck::Applied
    );
    assert!(granted(
        store.save("node", "rust", None).await.expect("save")
    ));
    store.force_delete("node").await.expect("force delete");
    assert!(!store.exists("node").await.expect("exists"));
}

/// An operation the server does not answer (here it waits behind a table lock, as it would
/// behind a hung server or a network partition) fails with a storage error once the command
/// timeout is up, and the store works again once the server answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_operation_fails_after_the_command_timeout() {
    let url = verrou_testkit::postgres_url();
    let table = unique("timeout");
    let timeout = Duration::from_millis(300);
    let store = PostgresStore::connect({
        let mut config = config(&table);
        config.command_timeout = timeout;
        config
    })
    .await
    .expect("store");
    let mut blocker = client(&url).await;
    let blocking = blocker.transaction().await.expect("transaction");
    blocking
        .batch_execute(&format!("LOCK TABLE \"{table}\" IN ACCESS EXCLUSIVE MODE"))
        .await
        .expect("table lock");

    for operation in ["save", "exists", "delete"] {
        let started = Instant::now();
        let outcome = match operation {
            "save" => store.save("k", "me", None).await.map(drop),
            "exists" => store.exists("k").await.map(drop),
            _ => store.delete("k", "me").await.map(drop),
        };
        let waited = started.elapsed();
        let error = outcome.expect_err("the table is locked");
        assert!(matches!(error, Error::Storage { .. }), "{error:?}");
        let chain = chain(&error);
        assert!(chain.contains("command timeout"), "{chain}");
        assert!(
            waited >= timeout && waited < Duration::from_secs(3),
            "{operation} gave up after {waited:?}"
        );
    }

    blocking.commit().await.expect("commit");
    assert!(granted(store.save("k", "me", None).await.expect("save")));
    assert!(store.exists("k").await.expect("exists"));
}

/// While every pooled connection is busy, an operation waits for one up to the pool timeout
/// when that is the shorter bound, and up to the command timeout otherwise; then it works
/// again as soon as a connection is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wait_for_a_busy_pool_ends_at_the_shorter_of_its_two_bounds() {
    let table = unique("busy_pool");
    let (short, long) = (Duration::from_millis(200), Duration::from_secs(30));
    for (pool_timeout, command_timeout, says) in [
        (short, long, "waiting for a slot"),
        (long, short, "command timeout"),
    ] {
        let store = PostgresStore::connect({
            let mut config = config(&table);
            config.pool_size = 1;
            config.pool_timeout = Some(pool_timeout);
            config.command_timeout = command_timeout;
            config
        })
        .await
        .expect("store");
        let busy = store.pool().get().await.expect("the only connection");
        let started = Instant::now();
        let error = store.exists("k").await.expect_err("no free connection");
        let waited = started.elapsed();
        assert!(matches!(error, Error::Storage { .. }), "{error:?}");
        let chain = chain(&error);
        assert!(chain.contains(says), "{chain}");
        assert!(
            waited >= short && waited < Duration::from_secs(5),
            "gave up after {waited:?}"
        );
        drop(busy);
        assert!(!store.exists("k").await.expect("a free connection again"));
    }
}

/// A take the server keeps waiting past the command timeout (here: for a row lock another
/// session holds) fails, and the lock gives the grant it may have made back; that release
/// waits until the server has ended the take, so the take can never commit a lock nobody
/// owns after it (held forever, without a TTL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_that_timed_out_is_given_back_after_the_server_ended_it() {
    let table = unique("late_commit");
    let mut config = config(&table);
    config.command_timeout = Duration::from_millis(500);
    let store = PostgresStore::connect(config).await.expect("a store");
    let factory = verrou_core::LockFactory::new(store);
    let key = unique("key");
    let mut admin = client(&verrou_testkit::postgres_url()).await;
    // An expired row of someone gone, locked by a transaction that outlasts the timeout.
    let insert = format!(
        "INSERT INTO \"{table}\" (\"key\", \"owner\", \"expiration\") VALUES ($1, 'gone', 0)"
    );
    admin
        .execute(&insert, &[&key])
        .await
        .expect("the expired row");
    let blocker = row_locked(&mut admin, &table, Row::Lock, &key).await;
    let lock = factory
        .create_lock_with_ttl(&key, verrou_core::Ttl::Never)
        .expect("a lock");
    let taken = lock.acquire_immediately().await;
    assert!(matches!(taken, Err(Error::Storage { .. })), "{taken:?}");
    // The lock gives the grant back meanwhile, in the background.
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocker.commit().await.expect("committed");
    let other = factory.create_lock(&key).expect("a lock");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !other.acquire_immediately().await.expect("a take") {
        assert!(
            Instant::now() < deadline,
            "the timed-out take committed a lock nobody owns"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    other.release().await.expect("released");
}

/// A statement whose caller stopped waiting (its future dropped: a timeout around
/// `release`) is cancelled and waited for like one that timed out: the key's next statement
/// runs after it, not beside it. Here the release waits for a row lock when dropped; the
/// extension sent next finds the lock still held once the row is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_statement_is_ended_before_the_keys_next_one() {
    let table = unique("dropped_statement");
    let store = PostgresStore::connect(config(&table))
        .await
        .expect("a store");
    let factory = verrou_core::LockFactory::new(store);
    let key = unique("key");
    let lock = factory.create_lock_with_ttl(&key, "30s").expect("a lock");
    assert!(lock.acquire_immediately().await.expect("a take"));
    let mut admin = client(&verrou_testkit::postgres_url()).await;
    let blocker = row_locked(&mut admin, &table, Row::Lock, &key).await;
    let dropped = tokio::time::timeout(Duration::from_millis(200), lock.release()).await;
    assert!(
        dropped.is_err(),
        "the release waited for the row: {dropped:?}"
    );
    let extend = tokio::spawn({
        let lock = lock.clone();
        async move { lock.extend().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocker.commit().await.expect("committed");
    extend
        .await
        .expect("the extension")
        .expect("the lock is still held: the dropped release was ended first");
    lock.release().await.expect("released");
}
