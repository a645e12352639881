//! Markdown tables and the machine line.

use crate::crowd::CrowdResult;
use crate::cycle::CycleResult;
use crate::handoff::HandoffResult;
use crate::shared_key::SharedKeyResult;
use crate::stats::show_us;

/// The cycle results as a markdown table.
pub(crate) fn cycle_table(results: &[CycleResult]) -> String {
    let mut table = String::from(
        "| store | in flight | verrou cycles/s | baseline cycles/s | ratio (lowest–highest round) | verrou p50 / p99 | baseline p50 / p99 | @verrou/core (Node.js) cycles/s, p50 / p99 | ratio to @verrou/core |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for result in results {
        let (node, node_ratio) = match &result.node {
            Some((node, ratio)) => (
                format!(
                    "{:.0}, {} / {}",
                    node.cycles_per_second,
                    show_us(node.latency.p50_us),
                    show_us(node.latency.p99_us)
                ),
                format!("{ratio:.2}×"),
            ),
            None => ("—".to_owned(), "—".to_owned()),
        };
        table.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.2}× ({:.2}–{:.2}) | {} / {} | {} / {} | {node} | {node_ratio} |\n",
            result.store,
            result.in_flight,
            result.verrou.cycles_per_second,
            result.baseline.cycles_per_second,
            result.ratio,
            result.round_ratios.0,
            result.round_ratios.1,
            show_us(result.verrou.latency.p50_us),
            show_us(result.verrou.latency.p99_us),
            show_us(result.baseline.latency.p50_us),
            show_us(result.baseline.latency.p99_us),
        ));
    }
    table
}

/// Where the cycles' CPU time went, as a markdown table: per cycle, this process's (the
/// client side) and the server's, for verrou and the baseline, with verrou's ratio to the
/// baseline.
pub(crate) fn cycle_cpu_table(results: &[CycleResult]) -> String {
    let mut table = String::from(
        "| store | in flight | client CPU µs per cycle, verrou / baseline (ratio) | server CPU µs per cycle, verrou / baseline (ratio) |\n\
         | --- | ---: | ---: | ---: |\n",
    );
    let split = |verrou: Option<f64>, baseline: Option<f64>| match (verrou, baseline) {
        (Some(verrou), Some(baseline)) if baseline > 0.0 => {
            format!("{verrou:.2} / {baseline:.2} ({:.2}×)", verrou / baseline)
        }
        _ => "—".to_owned(),
    };
    for result in results {
        let (verrou, baseline) = (
            result.verrou.cpu_us_per_cycle,
            result.baseline.cpu_us_per_cycle,
        );
        table.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            result.store,
            result.in_flight,
            split(verrou.client, baseline.client),
            split(verrou.server, baseline.server),
        ));
    }
    table
}

/// The handoff results as a markdown table.
pub(crate) fn handoff_table(results: &[HandoffResult]) -> String {
    let mut table = String::from(
        "| store | waiting | acquisitions/s | handoff p50 / p99 | asks in vain/s per waiter | busy answers per grant | per worker min / max (ratio) | double grants |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for result in results {
        let handoff = if result.handoffs == 0 {
            "no handoff".to_owned()
        } else {
            format!(
                "{} / {}",
                show_us(result.handoff.p50_us),
                show_us(result.handoff.p99_us)
            )
        };
        table.push_str(&format!(
            "| {} | {} | {:.0} | {} | {:.2} | {:.2} | {} / {} ({:.2}) | {} |\n",
            result.store,
            result.mode,
            result.acquisitions_per_second,
            handoff,
            result.asks_in_vain_per_second_per_waiter,
            result.busy_answers_per_grant,
            result.min_acquisitions_per_worker,
            result.max_acquisitions_per_worker,
            result.min_acquisitions_per_worker as f64
                / result.max_acquisitions_per_worker.max(1) as f64,
            result.double_grants,
        ));
    }
    table
}

/// The shared-key results (a lock beside a semaphore) as a markdown table.
pub(crate) fn shared_key_table(results: &[SharedKeyResult]) -> String {
    let mut table = String::from(
        "| store | primitive | acquisitions/s | handoff p50 / p99 | most inside (allowed) |\n\
         | --- | --- | ---: | ---: | ---: |\n",
    );
    for result in results {
        table.push_str(&format!(
            "| {} | {} | {:.0} | {} / {} | {} ({}) |\n",
            result.store,
            result.primitive,
            result.acquisitions_per_second,
            show_us(result.handoff.p50_us),
            show_us(result.handoff.p99_us),
            result.most_inside,
            result.limit,
        ));
    }
    table
}

/// The crowd results as a markdown table.
pub(crate) fn crowd_table(results: &[CrowdResult]) -> String {
    let mut table = String::from(
        "| store | waiters in line | time per grant | ratio | handoff p50 / p99 | most inside |\n\
         | --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for result in results {
        table.push_str(&format!(
            "| {} | {} | {} | {:.2}× | {} / {} | {} |\n",
            result.store,
            result.waiters,
            show_us(result.per_grant_us),
            result.ratio,
            show_us(result.handoff.p50_us),
            show_us(result.handoff.p99_us),
            result.most_inside,
        ));
    }
    table
}

/// The allocator the bench process runs on (`--features mimalloc`).
const ALLOCATOR_NAME: &str = if cfg!(feature = "mimalloc") {
    "allocator: mimalloc"
} else {
    "allocator: the system's"
};

/// What the numbers were measured on.
pub(crate) fn machine_line() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|name| name.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    format!(
        "{cores} cores, {cpu}; {} {}; {ALLOCATOR_NAME}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}
