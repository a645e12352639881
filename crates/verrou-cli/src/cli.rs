//! The command line, as clap reads it; its help is the manual.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;

/// The shortest `--ttl`.
const MIN_TTL: Duration = Duration::from_secs(1);

/// Shown after the top-level `--help`: examples, and every exit code.
const AFTER_HELP: &str = "\
Examples:
  verrou run --url redis://cache:6379 --key nightly-report -- ./report.sh --full
  verrou run --url postgres://app@db/app --key backup --ttl 1m --wait 10m -- ./backup.sh
  verrou run --config /etc/verrou.toml --store redis --key deploy --wait forever -- make deploy
  verrou status --url redis://cache:6379 --key nightly-report
  verrou release --url redis://cache:6379 --key nightly-report --force
  verrou completions bash > /etc/bash_completion.d/verrou

Exit status:
  0-255  run: the job's own status (128+N if it died of signal N)
  0      status: the lock is held; release: done
  1      status: the lock is free
  64     bad command line
  69     store unavailable: cannot connect, or a store operation failed
  70     internal error
  75     run: the lock was not free within --wait; the job did not run
  76     run: the lock was lost while the job ran; the job was signalled (see --on-lost)
  78     configuration error: bad --url or configuration file, unknown --store, memory store
  126    run: the job could not be executed
  127    run: the job's program was not found
  128+N  run: verrou got signal N while waiting for the lock; the job did not run";

/// Shown after `run --help`: what the job sees and how it is treated.
const RUN_AFTER_HELP: &str = "\
The job runs in its own process group, with VERROU_KEY set to the key and
VERROU_FENCING_TOKEN to the grant's fencing token: a number greater than that of every
earlier grant of the key, to pass along with every write so that the resource can refuse
writes from a holder that lost the lock. The lock is renewed every third of --ttl while the
job runs, and released when it exits.

SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 sent to verrou go to the job's
process group; verrou then exits with the job's status. If verrou itself is killed with
SIGKILL, the job runs on without renewals and the lock expires after --ttl.

Examples:
  verrou run --url redis://cache:6379 --key nightly-report -- ./report.sh --full
  verrou run --url redis://cache:6379 --key sync --wait 5m --ttl 10s --on-lost kill -- ./sync.sh
  VERROU_URL=postgres://app:secret@db/app verrou run --key backup -- ./backup.sh";

/// Runs a job under a distributed lock: flock(1) for many machines.
///
/// The lock lives in Redis or PostgreSQL, so that cron and CI jobs run once across every
/// machine that shares the store.
#[derive(Debug, Parser)]
#[command(name = "verrou", version, after_help = AFTER_HELP)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
    /// Log the library's debug messages on stderr (warnings are always shown).
    #[arg(long, short, global = true)]
    pub(crate) verbose: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a job while holding a lock, and exit with its status.
    #[command(after_help = RUN_AFTER_HELP)]
    Run(RunArgs),
    /// Tell whether a lock is held (prints `held`, exits 0) or free (prints `free`, exits 1).
    Status(LockArgs),
    /// Release a lock whoever holds it (needs --force).
    Release(ReleaseArgs),
    /// Print a completion script for a shell.
    Completions {
        /// The shell.
        shell: Shell,
    },
}

/// Which store the lock lives in.
#[derive(Debug, Clone, Args)]
pub(crate) struct StoreArgs {
    /// The store: redis://, rediss://, redis-cluster://, redis-sentinel://, postgres:// or
    /// postgresql:// [default: $VERROU_URL, which keeps a password out of `ps`]
    #[arg(long, value_name = "URL", conflicts_with = "config")]
    pub(crate) url: Option<String>,
    /// Take the store from a configuration file (.toml or .json), as the verrou library reads
    /// it: VERROU_STORES__<NAME>__URL and the like override the file.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// The store of --config to use [default: the file's default store].
    #[arg(long, value_name = "NAME", requires = "config")]
    pub(crate) store: Option<String>,
}

/// A lock: its store and its key.
#[derive(Debug, Clone, Args)]
pub(crate) struct LockArgs {
    /// Where the lock lives.
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// The lock's name, shared by every process that must not run at the same time.
    #[arg(long, short)]
    pub(crate) key: String,
}

/// `verrou run`.
#[derive(Debug, Clone, Args)]
pub(crate) struct RunArgs {
    /// The lock.
    #[command(flatten)]
    pub(crate) lock: LockArgs,
    /// How long the lock outlives a verrou that stops renewing it (killed, or cut off from
    /// the store); renewed every third of it.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = ttl)]
    pub(crate) ttl: Duration,
    /// How long to wait for the lock: a duration, `0` (do not wait) or `forever`.
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = wait)]
    pub(crate) wait: Wait,
    /// What to do to the job if the lock is lost while it runs.
    #[arg(long, value_enum, value_name = "ACTION", default_value_t = OnLost::Term)]
    pub(crate) on_lost: OnLost,
    /// With --on-lost term: how long the job has to stop after SIGTERM before SIGKILL.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration)]
    pub(crate) kill_after: Duration,
    /// The job and its arguments (after `--` if they start with `-`).
    #[arg(
        value_name = "COMMAND",
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        value_parser = clap::value_parser!(OsString)
    )]
    pub(crate) command: Vec<OsString>,
}

/// `verrou release`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ReleaseArgs {
    /// The lock.
    #[command(flatten)]
    pub(crate) lock: LockArgs,
    /// Release the lock even though this process does not hold it (the only way there is:
    /// whoever holds it loses it).
    #[arg(long)]
    pub(crate) force: bool,
}

/// How long `run` waits for a lock that someone else holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Try once.
    No,
    /// Try until this much time has passed.
    For(Duration),
    /// Try until the lock is had.
    Forever,
}

/// What `run` does to the job when the lock is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OnLost {
    /// SIGTERM, then SIGKILL after --kill-after.
    Term,
    /// SIGKILL at once.
    Kill,
    /// Let the job finish (verrou still exits 76).
    Ignore,
}

/// A duration as the library reads it: `250ms`, `30s`, `5m`, `1h30m`, or milliseconds.
fn duration(input: &str) -> Result<Duration, String> {
    verrou::parse_duration(input).map_err(|error| error.to_string())
}

/// `--ttl`: a duration of a second or more, as renewals come every third of it and each is a
/// round trip to the store.
fn ttl(input: &str) -> Result<Duration, String> {
    let ttl = duration(input)?;
    if ttl < MIN_TTL {
        return Err(format!(
            "it must be at least {MIN_TTL:?}: the lock is renewed every third of it"
        ));
    }
    Ok(ttl)
}

/// `--wait`: `0`, `forever`, or a duration.
fn wait(input: &str) -> Result<Wait, String> {
    match input.trim() {
        "0" => Ok(Wait::No),
        "forever" => Ok(Wait::Forever),
        other => duration(other).map(Wait::For),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn wait_reads_zero_forever_and_durations() {
        assert_eq!(wait("0"), Ok(Wait::No));
        assert_eq!(wait("forever"), Ok(Wait::Forever));
        assert_eq!(wait("5m"), Ok(Wait::For(Duration::from_secs(300))));
        assert!(wait("soon").is_err());
    }

    #[test]
    fn ttl_is_a_second_or_more() {
        assert_eq!(ttl("1s"), Ok(Duration::from_secs(1)));
        assert!(ttl("999ms").unwrap_err().contains("at least 1s"));
    }

    #[test]
    fn options_before_the_job_are_checked() {
        let mistake = Cli::try_parse_from(["verrou", "run", "--key", "k", "--wiat", "5m", "job"]);
        assert!(mistake.is_err());
    }

    #[test]
    fn the_job_keeps_its_own_options() {
        let cli = Cli::try_parse_from([
            "verrou",
            "run",
            "--url",
            "redis://h",
            "--key",
            "k",
            "ls",
            "-l",
            "--ttl",
            "x",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not a run: {cli:?}");
        };
        assert_eq!(run.command, ["ls", "-l", "--ttl", "x"]);
        assert_eq!(run.ttl, Duration::from_secs(30));
    }
}
