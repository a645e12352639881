//! Markdown tables and the machine line.

use crate::cycle::CycleResult;
use crate::handoff::HandoffResult;
use crate::stats::show_us;

/// The cycle results as a markdown table.
pub(crate) fn cycle_table(results: &[CycleResult]) -> String {
    let mut table = String::from(
        "| store | in flight | verrou cycles/s | baseline cycles/s | ratio | verrou p50 / p99 | baseline p50 / p99 |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for result in results {
        table.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.2}× | {} / {} | {} / {} |\n",
            result.store,
            result.in_flight,
            result.verrou.cycles_per_second,
            result.baseline.cycles_per_second,
            result.ratio,
            show_us(result.verrou.latency.p50_us),
            show_us(result.verrou.latency.p99_us),
            show_us(result.baseline.latency.p50_us),
            show_us(result.baseline.latency.p99_us),
        ));
    }
    table
}

/// The handoff results as a markdown table.
pub(crate) fn handoff_table(results: &[HandoffResult]) -> String {
    let mut table = String::from(
        "| store | waiters learn of a release by | acquisitions/s | handoff p50 / p99 | failed attempts/s per waiter | per worker min / max | double grants |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: |\n",
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
            "| {} | {} | {:.0} | {} | {:.2} | {} / {} | {} |\n",
            result.store,
            result.mode,
            result.acquisitions_per_second,
            handoff,
            result.failed_attempts_per_second_per_waiter,
            result.min_acquisitions_per_worker,
            result.max_acquisitions_per_worker,
            result.double_grants,
        ));
    }
    table
}

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
        "{cores} cores, {cpu}; {} {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}
