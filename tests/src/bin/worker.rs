//! A separate process that uses one lock store, driven by the end-to-end tests. It prints
//! one line per event on stdout, so the test can check what the processes did together.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand, ValueEnum};
use verrou::{LockFactory, LockStore, Retry};

#[derive(Parser)]
struct Cli {
    /// The store, at VERROU_REDIS_URL or VERROU_POSTGRES_URL.
    #[arg(long)]
    store: Store,
    #[command(subcommand)]
    task: Task,
}

/// A side of a read-write lock.
#[derive(ValueEnum, Clone, Copy)]
enum Side {
    Read,
    Write,
}

#[derive(ValueEnum, Clone, Copy)]
enum Store {
    Redis,
    /// Redis with fencing tokens on.
    RedisFenced,
    Postgres,
}

#[derive(Subcommand)]
enum Task {
    /// Takes `key` `turns` times, holding it `hold_ms` each time; prints
    /// `held <start_ns> <end_ns> <fencing token>` per turn (wall clock, inside the hold).
    Contend {
        key: String,
        turns: u32,
        hold_ms: u64,
    },
    /// Like `contend`, with a retry delay of an hour: only the store's hand-over moves it.
    Queue {
        key: String,
        turns: u32,
        hold_ms: u64,
    },
    /// Like `contend`, on a permit of the semaphore `key` of `limit` permits.
    Permit {
        key: String,
        limit: u32,
        turns: u32,
        hold_ms: u64,
    },
    /// Like `contend`, on the read or write side of the read-write lock `key`.
    Rw {
        key: String,
        side: Side,
        turns: u32,
        hold_ms: u64,
    },
    /// Takes `key` and prints the serialized lock, then exits without releasing it.
    Hand { key: String, ttl: String },
    /// Restores a serialized lock (the argument) and releases it; prints `released`.
    Release { serialized: String },
    /// Takes `key` and prints `acquired`, then waits to be killed.
    HoldForever { key: String, ttl: String },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> verrou::Result<()> {
    let cli = Cli::parse();
    let factory = LockFactory::from_shared(connect(cli.store).await?)
        .with_retry(Retry::new().delay("5ms").timeout("60s"))?;
    match cli.task {
        Task::Contend {
            key,
            turns,
            hold_ms,
        } => {
            let new_lock = || factory.create_lock_with_ttl(key.as_str(), "30s");
            take_turns(new_lock, turns, hold_ms).await?;
        }
        Task::Queue {
            key,
            turns,
            hold_ms,
        } => {
            let patient = factory.clone().with_retry(Retry::new().delay("1h"))?;
            let new_lock = || patient.create_lock_with_ttl(key.as_str(), "30s");
            take_turns(new_lock, turns, hold_ms).await?;
        }
        Task::Permit {
            key,
            limit,
            turns,
            hold_ms,
        } => {
            let new_lock = || factory.create_semaphore_with_ttl(key.as_str(), limit, "30s");
            take_turns(new_lock, turns, hold_ms).await?;
        }
        Task::Rw {
            key,
            side,
            turns,
            hold_ms,
        } => {
            let rw = factory.create_rw_lock_with_ttl(key, "30s")?;
            let new_lock = || match side {
                Side::Read => rw.read(),
                Side::Write => rw.write(),
            };
            take_turns(new_lock, turns, hold_ms).await?;
        }
        Task::Hand { key, ttl } => {
            let lock = factory.create_lock_with_ttl(key, ttl.as_str())?;
            assert!(lock.acquire_immediately().await?, "the key is free");
            println!("{}", lock.serialize());
        }
        Task::Release { serialized } => {
            factory.restore_lock(serialized)?.release().await?;
            println!("released");
        }
        Task::HoldForever { key, ttl } => {
            let lock = factory.create_lock_with_ttl(key, ttl.as_str())?;
            assert!(lock.acquire_immediately().await?, "the key is free");
            println!("acquired");
            std::future::pending::<()>().await;
        }
    }
    Ok(())
}

/// Takes a lock made by `new_lock` `turns` times, holding it `hold_ms` each time; prints
/// `held <start_ns> <end_ns> <fencing token>` per turn (wall clock, inside the hold).
async fn take_turns(
    new_lock: impl Fn() -> verrou::Result<verrou::Lock>,
    turns: u32,
    hold_ms: u64,
) -> verrou::Result<()> {
    for _ in 0..turns {
        let lock = new_lock()?;
        assert!(lock.acquire().await?, "gave up after 60 s");
        let started = epoch_nanos();
        tokio::time::sleep(Duration::from_millis(hold_ms)).await;
        let ended = epoch_nanos();
        let token = lock.fencing_token().unwrap_or_default();
        println!("held {started} {ended} {token}");
        lock.release().await?;
    }
    Ok(())
}

async fn connect(store: Store) -> verrou::Result<std::sync::Arc<dyn LockStore>> {
    let url = |var: &str| {
        std::env::var(var).map_err(|_| verrou::Error::InvalidConfig(format!("{var} is not set")))
    };
    Ok(match store {
        Store::Redis | Store::RedisFenced => {
            let mut config = verrou::redis::RedisConfig::new(url("VERROU_REDIS_URL")?);
            config.fencing_tokens = matches!(store, Store::RedisFenced);
            std::sync::Arc::new(verrou::redis::RedisStore::connect(config).await?)
        }
        Store::Postgres => std::sync::Arc::new(
            verrou::postgres::PostgresStore::connect(verrou::postgres::PostgresConfig::new(url(
                "VERROU_POSTGRES_URL",
            )?))
            .await?,
        ),
    })
}

fn epoch_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos())
}
