//! The Node.js library, @verrou/core on ioredis, as its users run it: the cycle benchmark's
//! second comparison on Redis, measured in the same run by `benches/node/cycle.mjs`, a child
//! process on the same server.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::process::Command;

use crate::backends::BoxError;
use crate::cycle::{CpuPerCycle, Side};
use crate::stats::Percentiles;

/// The Node.js side of the Redis cycle benchmark.
pub(crate) struct NodeRival {
    url: String,
}

/// What `cycle.mjs` prints.
#[derive(Deserialize)]
struct Printed {
    cycles_per_second: f64,
    p50_us: f64,
    p99_us: f64,
}

impl NodeRival {
    /// The Node.js side on the Redis at `url`, its packages installed (`npm ci`, from the
    /// committed lock file) if they are missing; `None`, saying why, where Node.js or npm is
    /// missing or the install fails.
    pub(crate) async fn on(url: &str) -> Option<Self> {
        match install(&directory()).await {
            Ok(()) => Some(Self {
                url: url.to_owned(),
            }),
            Err(error) => {
                println!("@verrou/core on Node.js skipped: {error}\n");
                None
            }
        }
    }

    /// One run of `in_flight` loops for `run_for`, on keys of `round`.
    pub(crate) async fn run(&self, in_flight: usize, run_for: Duration, round: usize) -> Side {
        let output = Command::new("node")
            .current_dir(directory())
            .arg("cycle.mjs")
            .arg(&self.url)
            .arg(in_flight.to_string())
            .arg(run_for.as_secs_f64().to_string())
            .arg(round.to_string())
            .stderr(Stdio::inherit())
            .output()
            .await
            .expect("node starts (it ran `npm ci`)");
        assert!(
            output.status.success(),
            "cycle.mjs failed: {}",
            output.status
        );
        let printed: Printed =
            serde_json::from_slice(&output.stdout).expect("cycle.mjs prints its JSON line");
        Side {
            cycles_per_second: printed.cycles_per_second,
            latency: Percentiles {
                p50_us: printed.p50_us,
                p99_us: printed.p99_us,
            },
            // Its CPU time is another process's.
            cpu_us_per_cycle: CpuPerCycle::default(),
        }
    }
}

/// Where `cycle.mjs` and its packages are.
fn directory() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("node")
}

/// Installs the packages of `directory` unless they are there.
async fn install(directory: &Path) -> Result<(), BoxError> {
    let version = Command::new("node").arg("--version").output().await;
    if !version.is_ok_and(|version| version.status.success()) {
        return Err("no `node` on the PATH".into());
    }
    if directory.join("node_modules/@verrou/core").is_dir() {
        return Ok(());
    }
    let installed = Command::new("npm")
        .current_dir(directory)
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .status()
        .await
        .map_err(|error| format!("cannot run `npm ci`: {error}"))?;
    if !installed.success() {
        return Err(format!("`npm ci` failed: {installed}").into());
    }
    Ok(())
}
