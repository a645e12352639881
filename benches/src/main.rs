//! `verrou-bench`: throughput, latency and handoff of verrou's stores, each beside a
//! bare-client baseline measured in the same run; the Redis cycle rows also beside the
//! Node.js library, @verrou/core on ioredis, on the same server (`--without-node` leaves it
//! out). Prints markdown tables; `--json` also writes the numbers.
//!
//! ```text
//! cargo run -p verrou-benches --release -- all
//! cargo run -p verrou-benches --release -- cycle --stores memory --seconds 2
//! cargo run -p verrou-benches --release -- handoff --stores redis,postgres --json out.json
//! cargo run -p verrou-benches --release -- semaphore --stores memory,redis
//! cargo run -p verrou-benches --release -- crowd --stores memory,redis,postgres --rounds 3
//! cargo run -p verrou-benches --release -- cycle --stores redis,redis-fenced,redis-cluster
//! cargo run -p verrou-benches --release -- cycle --stores redis,redis-replicated
//! ```
//!
//! `--features mimalloc` runs the whole process (verrou and the baselines alike) on
//! mimalloc instead of the system allocator.
//!
//! Redis and PostgreSQL run on private throwaway servers unless `VERROU_REDIS_URL` /
//! `VERROU_POSTGRES_URL` name servers to use; `redis-cluster` always runs on a private Redis
//! Cluster (three masters, three replicas, all on this machine), and `redis-replicated`
//! (replica acknowledgement) on a private master and its replica.

mod backends;
mod cpu;
mod crowd;
mod cycle;
mod handoff;
mod node;
mod report;
mod shared_key;
mod stats;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::backends::Backend;
use crate::handoff::Mode;

/// The allocator of the whole process, verrou's side and the baselines' alike.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL_ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Benchmarks of verrou's stores against bare-client baselines")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// The stores to measure.
    #[arg(long, value_delimiter = ',', default_values = ["memory", "redis", "redis-fenced", "postgres"], global = true)]
    stores: Vec<StoreName>,
    /// Seconds per measured run.
    #[arg(long, default_value_t = 2.0, global = true)]
    seconds: f64,
    /// Rounds of interleaved baseline and verrou runs (the median is kept).
    #[arg(long, default_value_t = 3, global = true)]
    rounds: usize,
    /// Also write the results as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Leave out @verrou/core on Node.js, which the Redis cycle rows are otherwise also
    /// measured against (when `node` and `npm` are on the PATH; its packages are installed
    /// into `benches/node` at the first run).
    #[arg(long, global = true)]
    without_node: bool,
}

#[derive(Subcommand, Clone, Copy)]
enum Scenario {
    /// acquire_immediately + release cycles at 1 and 64 in flight.
    Cycle,
    /// Eight workers handing one key to each other.
    Handoff,
    /// 64 tasks on one key: a lock beside a semaphore of 8 permits.
    Semaphore,
    /// A crowd of 1,000 waiters in one key's line beside a crowd of 8.
    Crowd,
    /// All of them.
    All,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum StoreName {
    Memory,
    Redis,
    /// The Redis store with fencing tokens on (its take a script), beside the same baseline.
    RedisFenced,
    /// The Redis store on a private Redis Cluster, with its fred baseline on the same cluster.
    RedisCluster,
    /// The Redis store with replica acknowledgement (`min_replicas: 1`) on a private master
    /// and replica, with its fred baseline on the same master.
    RedisReplicated,
    Postgres,
}

#[derive(Serialize, Default)]
struct Results {
    machine: String,
    cycle: Vec<cycle::CycleResult>,
    handoff: Vec<handoff::HandoffResult>,
    shared_key: Vec<shared_key::SharedKeyResult>,
    crowd: Vec<crowd::CrowdResult>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let cli = Cli::parse();
    let mut results = Results {
        machine: report::machine_line(),
        ..Results::default()
    };
    println!("machine: {}\n", results.machine);
    for store in &cli.stores {
        let backend = match store {
            StoreName::Memory => Backend::memory(),
            StoreName::Redis => Backend::redis(!cli.without_node).await?,
            StoreName::RedisFenced => Backend::redis_fenced().await?,
            StoreName::RedisCluster => Backend::redis_cluster().await?,
            StoreName::RedisReplicated => Backend::redis_replicated().await?,
            StoreName::Postgres => Backend::postgres().await?,
        };
        if matches!(cli.scenario, Scenario::Cycle | Scenario::All) {
            for in_flight in [1, 64] {
                results
                    .cycle
                    .push(cycle::measure(&backend, in_flight, cli.seconds, cli.rounds).await);
            }
        }
        if matches!(cli.scenario, Scenario::Handoff | Scenario::All) {
            let modes = [
                Mode::Line(1),
                Mode::Line(2),
                Mode::Line(8),
                Mode::Poll(Duration::from_millis(10)),
                Mode::Poll(Duration::from_millis(250)),
            ];
            for (round, mode) in modes.into_iter().enumerate() {
                results
                    .handoff
                    .push(handoff::measure(&backend, mode, cli.seconds, round).await);
            }
        }
        if matches!(cli.scenario, Scenario::Semaphore | Scenario::All) {
            for limit in [None, Some(8)] {
                results
                    .shared_key
                    .push(shared_key::measure(&backend, limit, cli.seconds).await);
            }
        }
        if matches!(cli.scenario, Scenario::Crowd | Scenario::All) {
            results
                .crowd
                .extend(crowd::measure(&backend, cli.rounds).await);
        }
    }
    if !results.cycle.is_empty() {
        println!("### Cycle throughput (acquire_immediately + release, fresh lock per cycle)\n");
        println!("{}", report::cycle_table(&results.cycle));
        println!("### Where the cycles' CPU time went (client: this process; server: Redis `INFO cpu`)\n");
        println!("{}", report::cycle_cpu_table(&results.cycle));
    }
    if !results.handoff.is_empty() {
        println!("### Handoff (8 workers, one key, hold 1 ms)\n");
        println!("{}", report::handoff_table(&results.handoff));
    }
    if !results.shared_key.is_empty() {
        println!(
            "### One key, {} tasks (acquire, hold 1 ms, release)\n",
            shared_key::TASKS
        );
        println!("{}", report::shared_key_table(&results.shared_key));
    }
    if !results.crowd.is_empty() {
        println!("### A crowd in one key's line (one store instance; each waiter takes the key in turn and gives it back at once)\n");
        println!("{}", report::crowd_table(&results.crowd));
    }
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
        println!("results written to {}", path.display());
    }
    Ok(())
}
