//! Cycle throughput: `acquire_immediately` + `release` of a fresh lock per cycle, with
//! `in_flight` tasks on distinct keys, beside the baseline doing the same round trips.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use verrou::LockFactory;

use crate::backends::{Backend, Baseline, TTL};
use crate::cpu;
use crate::stats::{median, new_histogram, record, Percentiles};

/// One side (verrou or the baseline) of a cycle measurement.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Side {
    pub(crate) cycles_per_second: f64,
    pub(crate) latency: Percentiles,
    /// CPU time per cycle over all rounds, in microseconds: this process's (the client's),
    /// and the server's where it reports it ([`Baseline::server_time`]). The Node.js side
    /// runs in another process and has none.
    pub(crate) cpu_us_per_cycle: CpuPerCycle,
}

/// CPU time per cycle, in microseconds, where known.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct CpuPerCycle {
    pub(crate) client: Option<f64>,
    pub(crate) server: Option<f64>,
}

/// The CPU time used so far by this process and by the server.
#[derive(Clone, Copy)]
struct CpuReading {
    client: Option<Duration>,
    server: Option<Duration>,
}

impl CpuReading {
    /// The reading now; the server's through `baseline`.
    async fn now(baseline: &Arc<dyn Baseline>) -> Self {
        Self {
            server: baseline.server_time().await,
            client: cpu::process_time(),
        }
    }
}

/// The CPU time the runs between readings took, summed over the rounds of one side; unknown
/// (`None`) once a reading of any round was.
struct CpuTally {
    client: Option<Duration>,
    server: Option<Duration>,
    cycles: u64,
}

impl Default for CpuTally {
    fn default() -> Self {
        Self {
            client: Some(Duration::ZERO),
            server: Some(Duration::ZERO),
            cycles: 0,
        }
    }
}

impl CpuTally {
    /// Adds a run of `cycles` between `before` and `after`.
    fn add(&mut self, before: CpuReading, after: CpuReading, cycles: u64) {
        let spent =
            |before, after, sum: Option<Duration>| sum?.checked_add(cpu::between(before, after)?);
        self.client = spent(before.client, after.client, self.client);
        self.server = spent(before.server, after.server, self.server);
        self.cycles += cycles;
    }

    /// The CPU time per cycle of the runs added.
    fn per_cycle(&self) -> CpuPerCycle {
        let per_cycle = |spent| cpu::micros_per_cycle(spent, self.cycles);
        CpuPerCycle {
            client: per_cycle(self.client),
            server: per_cycle(self.server),
        }
    }
}

/// A cycle measurement: verrou beside its baseline.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CycleResult {
    pub(crate) store: &'static str,
    pub(crate) in_flight: usize,
    pub(crate) verrou: Side,
    pub(crate) baseline: Side,
    pub(crate) ratio: f64,
    /// The lowest and the highest ratio of one round (verrou's run to the baseline's run
    /// just before it): how far the machine's noise moves the ratio.
    pub(crate) round_ratios: (f64, f64),
    /// @verrou/core on Node.js, where the backend has it, and verrou's ratio to it.
    pub(crate) node: Option<(Side, f64)>,
}

/// Runs `rounds` rounds, each a baseline run then a verrou run of `seconds` (then a Node.js
/// run, where the backend has one), each run after the server settled
/// ([`Baseline::settle`]), and keeps the median throughput of each side. Node.js reports
/// percentiles, not a histogram: its latencies are those of its median round.
pub(crate) async fn measure(
    backend: &Backend,
    in_flight: usize,
    seconds: f64,
    rounds: usize,
) -> CycleResult {
    let factory = LockFactory::from_shared(backend.new_store().await);
    let run_for = Duration::from_secs_f64(seconds);
    let (mut verrou_runs, mut baseline_runs) = (Runs::new(), Runs::new());
    let mut node_runs = Vec::new();
    for round in 0..rounds {
        backend.baseline.settle().await;
        let run = run_baseline(&backend.baseline, in_flight, run_for, round);
        baseline_runs.add(&backend.baseline, run).await;
        backend.baseline.settle().await;
        let run = run_verrou(&factory, in_flight, run_for, round);
        verrou_runs.add(&backend.baseline, run).await;
        if let Some(node) = &backend.node {
            backend.baseline.settle().await;
            node_runs.push(node.run(in_flight, run_for, round).await);
        }
    }
    let round_ratios = verrou_runs
        .rates
        .iter()
        .zip(&baseline_runs.rates)
        .map(|(verrou, baseline)| verrou / baseline)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), ratio| {
            (low.min(ratio), high.max(ratio))
        });
    let (verrou, baseline) = (verrou_runs.side(), baseline_runs.side());
    node_runs.sort_by(|a, b| a.cycles_per_second.total_cmp(&b.cycles_per_second));
    let node = node_runs.get(node_runs.len() / 2).map(|node| {
        let ratio = verrou.cycles_per_second / node.cycles_per_second;
        (node.clone(), ratio)
    });
    CycleResult {
        store: backend.name,
        in_flight,
        ratio: verrou.cycles_per_second / baseline.cycles_per_second,
        round_ratios,
        verrou,
        baseline,
        node,
    }
}

async fn run_verrou(
    factory: &LockFactory,
    in_flight: usize,
    run_for: Duration,
    round: usize,
) -> Run {
    run_tasks(in_flight, run_for, |task, deadline| {
        let factory = factory.clone();
        async move {
            let key = format!("bench:cycle:{round}:{task}");
            timed_cycles(deadline, || async {
                let lock = factory
                    .create_lock_with_ttl(key.as_str(), TTL)
                    .expect("valid key and TTL");
                assert!(
                    lock.acquire_immediately().await.expect("store reachable"),
                    "distinct keys are free"
                );
                lock.release().await.expect("released by its owner");
            })
            .await
        }
    })
    .await
}

async fn run_baseline(
    baseline: &Arc<dyn Baseline>,
    in_flight: usize,
    run_for: Duration,
    round: usize,
) -> Run {
    run_tasks(in_flight, run_for, |task, deadline| {
        let baseline = Arc::clone(baseline);
        async move {
            let key = format!("bench:baseline:{round}:{task}");
            let owner = format!("owner-{task:026}");
            timed_cycles(deadline, || async {
                assert!(baseline.take(&key, &owner).await, "distinct keys are free");
                assert!(
                    baseline.release(&key, &owner).await,
                    "released by its owner"
                );
            })
            .await
        }
    })
    .await
}

/// Runs `cycle` until the deadline, timing each run; one clock read per cycle serves as the
/// end of one cycle and the start of the next.
async fn timed_cycles<F, Fut>(deadline: Instant, mut cycle: F) -> (u64, Histogram<u64>)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut latency = new_histogram();
    let mut cycles = 0u64;
    let mut started = Instant::now();
    while started < deadline {
        cycle().await;
        let now = Instant::now();
        record(&mut latency, now - started);
        started = now;
        cycles += 1;
    }
    (cycles, latency)
}

/// One run of one side.
struct Run {
    /// Cycles per second, all tasks together.
    rate: f64,
    cycles: u64,
    latency: Histogram<u64>,
}

/// The runs of one side so far: their throughputs, their merged latencies, their CPU time.
struct Runs {
    rates: Vec<f64>,
    latency: Histogram<u64>,
    cpu: CpuTally,
}

impl Runs {
    fn new() -> Self {
        Self {
            rates: Vec::new(),
            latency: new_histogram(),
            cpu: CpuTally::default(),
        }
    }

    /// Makes `run` and adds it, with the CPU time it took here and on the server that
    /// `baseline` reads.
    async fn add(&mut self, baseline: &Arc<dyn Baseline>, run: impl Future<Output = Run>) {
        let before = CpuReading::now(baseline).await;
        let run = run.await;
        self.cpu
            .add(before, CpuReading::now(baseline).await, run.cycles);
        self.rates.push(run.rate);
        self.latency
            .add(&run.latency)
            .expect("same histogram bounds");
    }

    /// The side these runs make: their median throughput.
    fn side(self) -> Side {
        Side {
            cycles_per_second: median(self.rates),
            latency: Percentiles::of(&self.latency),
            cpu_us_per_cycle: self.cpu.per_cycle(),
        }
    }
}

/// Spawns `in_flight` tasks that cycle until the deadline; the run they made.
async fn run_tasks<F, Fut>(in_flight: usize, run_for: Duration, task: F) -> Run
where
    F: Fn(usize, Instant) -> Fut,
    Fut: Future<Output = (u64, Histogram<u64>)> + Send + 'static,
{
    let started = Instant::now();
    let deadline = started + run_for;
    let handles: Vec<_> = (0..in_flight)
        .map(|index| tokio::spawn(task(index, deadline)))
        .collect();
    let mut total = 0;
    let mut latency = new_histogram();
    for handle in handles {
        let (cycles, histogram) = handle.await.expect("benchmark task panicked");
        total += cycles;
        latency.add(&histogram).expect("same histogram bounds");
    }
    Run {
        rate: total as f64 / started.elapsed().as_secs_f64(),
        cycles: total,
        latency,
    }
}
