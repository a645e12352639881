//! `verrou run`: take the lock, run the job under it, give the lock back.

use std::ffi::OsString;
use std::process::ExitStatus;

use nix::sys::signal::Signal;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use verrou::{Lock, LockFactory, LockGuard, LossSignal, Retry};

use crate::cli::{OnLost, RunArgs, Wait};
use crate::exit::{one_line, signal_code, status_code, Exit, Failure};
use crate::signals::{send_to_group, Caught};

/// The job's environment variable that holds the lock's key.
const KEY_VAR: &str = "VERROU_KEY";
/// The job's environment variable that holds the grant's fencing token.
const TOKEN_VAR: &str = "VERROU_FENCING_TOKEN";

/// Runs the job under the lock; `Ok` with the job's status, or why there is none to report
/// (or why it does not count: a lost lock).
pub(crate) async fn run(args: RunArgs, factory: LockFactory) -> Result<u8, Failure> {
    let key = args.lock.key.as_str();
    let lock = factory.create_lock_with_ttl(key, args.ttl)?;
    // Caught from now on, so that a signal while waiting stops the wait, not the process.
    let mut caught = Caught::start()
        .map_err(|error| Failure::new(Exit::Internal, format!("cannot catch signals: {error}")))?;
    let acquired = tokio::select! {
        acquired = acquire(&lock, args.wait) => acquired?,
        signal = caught.next() => {
            return Err(Failure::with_code(
                signal_code(signal as i32),
                format!("got {signal} while waiting for lock `{key}`; the job did not run"),
            ));
        }
    };
    let Some(mut guard) = acquired else {
        return Err(Failure::new(Exit::Busy, busy(key, args.wait)));
    };
    guard.auto_extend();
    let loss = guard.loss();
    let ran = match spawn(&args.command, key, guard.fencing_token()) {
        Ok(job) => watch(job, &loss, &mut caught, &args).await,
        Err(failure) => Err(failure),
    };
    finish(guard, &loss, ran, &args).await
}

/// Takes the lock, waiting as long as `wait` says.
async fn acquire(lock: &Lock, wait: Wait) -> verrou::Result<Option<LockGuard>> {
    let timeout = match wait {
        Wait::No => return lock.acquire_guard_immediately().await,
        Wait::For(timeout) => timeout,
        // Longer than any retry timeout a configuration file may set.
        Wait::Forever => verrou::MAX_DURATION,
    };
    lock.acquire_guard_with(Retry::new().timeout(timeout)).await
}

/// Why the job did not run, when someone else has the lock.
fn busy(key: &str, wait: Wait) -> String {
    match wait {
        Wait::No => {
            format!("lock `{key}` is held elsewhere; the job did not run (--wait waits for it)")
        }
        Wait::For(waited) => {
            format!("lock `{key}` was still held elsewhere after {waited:?}; the job did not run")
        }
        Wait::Forever => format!(
            "gave up waiting for lock `{key}` (the configuration's retry attempts ran out); \
             the job did not run"
        ),
    }
}

/// Starts the job as the leader of a process group of its own, so that a signal reaches
/// the whole job (a script and the programs it runs), not only its first process.
fn spawn(command: &[OsString], key: &str, token: Option<u64>) -> Result<Child, Failure> {
    let Some((program, arguments)) = command.split_first() else {
        return Err(Failure::new(Exit::Usage, "no job to run"));
    };
    let mut job = Command::new(program);
    job.args(arguments).env(KEY_VAR, key).process_group(0);
    match token {
        Some(token) => job.env(TOKEN_VAR, token.to_string()),
        // Never one inherited from an enclosing run: it would be another lock's.
        None => job.env_remove(TOKEN_VAR),
    };
    job.spawn().map_err(|error| {
        let exit = match error.kind() {
            std::io::ErrorKind::NotFound => Exit::NotFound,
            _ => Exit::CannotExecute,
        };
        Failure::new(
            exit,
            format!("cannot run `{}`: {error}", program.to_string_lossy()),
        )
    })
}

/// Waits for the job to exit, passing on the signals verrou catches and acting on the loss
/// of the lock as `--on-lost` says.
async fn watch(
    mut job: Child,
    loss: &LossSignal,
    caught: &mut Caught,
    args: &RunArgs,
) -> Result<ExitStatus, Failure> {
    let group = job.id().unwrap_or_default();
    let mut kill_at: Option<Instant> = None;
    let mut heard_of_loss = false;
    loop {
        tokio::select! {
            status = job.wait() => {
                return status.map_err(|error| {
                    Failure::new(Exit::Internal, format!("cannot wait for the job: {error}"))
                });
            }
            signal = caught.next() => send_to_group(group, signal),
            () = loss.lost(), if !heard_of_loss => {
                heard_of_loss = true;
                let action = match args.on_lost {
                    OnLost::Term => {
                        send_to_group(group, Signal::SIGTERM);
                        kill_at = Some(Instant::now() + args.kill_after);
                        format!("sent SIGTERM to the job (SIGKILL in {:?})", args.kill_after)
                    }
                    OnLost::Kill => {
                        send_to_group(group, Signal::SIGKILL);
                        "sent SIGKILL to the job".to_owned()
                    }
                    OnLost::Ignore => "the job keeps running (--on-lost ignore)".to_owned(),
                };
                eprintln!(
                    "verrou: lock `{}` lost while the job was running (renewal refused, or the \
                     store unreachable); {action}",
                    args.lock.key
                );
            }
            () = sleep_until(kill_at), if kill_at.is_some() => {
                kill_at = None;
                send_to_group(group, Signal::SIGKILL);
                eprintln!("verrou: the job was still running {:?} after SIGTERM; sent SIGKILL", args.kill_after);
            }
        }
    }
}

/// Sleeps until `at`; forever if there is no such time.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Gives the lock back and says how `run` ends: with the job's status, or with
/// [`Exit::Lost`] if the job may not have run alone.
async fn finish(
    guard: LockGuard,
    loss: &LossSignal,
    ran: Result<ExitStatus, Failure>,
    args: &RunArgs,
) -> Result<u8, Failure> {
    let key = &args.lock.key;
    if loss.is_lost() {
        // Nothing to give back: the lock is gone, or about to be.
        let how = match &ran {
            Ok(status) => format!("exited with status {}", status_code(*status)),
            Err(failure) => failure.to_string(),
        };
        return Err(Failure::new(
            Exit::Lost,
            format!("lock `{key}` was lost while the job ran; the job {how}"),
        ));
    }
    match guard.release().await {
        Ok(()) => {}
        Err(verrou::Error::NotOwned { .. }) if ran.is_ok() => {
            return Err(Failure::new(
                Exit::Lost,
                format!(
                    "lock `{key}` had expired when the job ended; the job may not have run alone"
                ),
            ));
        }
        Err(error) => eprintln!(
            "verrou: warning: could not release lock `{key}` ({}); it expires within {:?}",
            one_line(&error),
            args.ttl
        ),
    }
    ran.map(status_code)
}
