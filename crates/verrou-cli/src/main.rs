//! `verrou`: run a job under a distributed lock, `flock(1)` for many machines. See the
//! README beside this crate, or `verrou --help`.

mod cli;
mod exit;
mod run;
mod signals;
mod store;

use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use tracing_subscriber::filter::LevelFilter;

use crate::cli::{Cli, Command, LockArgs, ReleaseArgs};
use crate::exit::{Exit, Failure};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return ExitCode::from(refuse(&error)),
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(if cli.verbose {
            LevelFilter::DEBUG
        } else {
            LevelFilter::WARN
        })
        .init();
    let code = match execute(cli.command) {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("verrou: {failure}");
            failure.code()
        }
    };
    ExitCode::from(code)
}

/// Reports a command line clap did not accept, and returns the code to exit with: help and
/// version go to stdout and are no error; a mistake is one line on stderr, [`Exit::Usage`].
fn refuse(error: &clap::Error) -> u8 {
    use clap::error::ErrorKind;

    if !error.use_stderr() {
        let _ = error.print();
        return 0;
    }
    if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // `verrou` alone: the help is the answer.
        let _ = error.print();
    } else {
        eprintln!("verrou: {}", usage_line(&error.render().to_string()));
    }
    Exit::Usage.code()
}

/// clap's message for a mistake, on one line: without its `error:` label, the usage it
/// repeats, or the hint to ask for help, which this line gives shorter.
fn usage_line(rendered: &str) -> String {
    let message = rendered.strip_prefix("error:").unwrap_or(rendered);
    let message = message
        .split("\n\nUsage:")
        .next()
        .and_then(|message| message.split("\n\nFor more information").next())
        .unwrap_or(message);
    let words = message.split_whitespace().collect::<Vec<_>>().join(" ");
    format!("{words} (see --help)")
}

/// Runs a subcommand to its exit code.
fn execute(command: Command) -> Result<u8, Failure> {
    if let Command::Completions { shell } = command {
        clap_complete::generate(shell, &mut Cli::command(), "verrou", &mut std::io::stdout());
        return Ok(0);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| Failure::new(Exit::Internal, format!("cannot start: {error}")))?;
    let code = runtime.block_on(async {
        match command {
            Command::Run(args) => {
                let factory = store::open(&args.lock.store).await?;
                run::run(args, factory).await
            }
            Command::Status(args) => status(&args).await,
            Command::Release(args) => release(&args).await,
            Command::Completions { .. } => Ok(0),
        }
    });
    // Connections and their tasks end with the process; a stuck name lookup does not delay it.
    runtime.shutdown_timeout(Duration::from_millis(100));
    code
}

/// `verrou status`: prints `held` (exit 0) or `free` (exit 1).
async fn status(args: &LockArgs) -> Result<u8, Failure> {
    let lock = store::open(&args.store).await?.create_lock(&args.key)?;
    if lock.is_locked().await? {
        println!("held");
        Ok(0)
    } else {
        println!("free");
        Ok(Exit::Free.code())
    }
}

/// `verrou release --force`: releases the lock, whoever holds it.
async fn release(args: &ReleaseArgs) -> Result<u8, Failure> {
    if !args.force {
        return Err(Failure::new(
            Exit::Usage,
            "release needs --force: this command does not hold the lock, so releasing it takes \
             it from whoever does, whose job then runs unprotected",
        ));
    }
    let lock = store::open(&args.lock.store)
        .await?
        .create_lock(&args.lock.key)?;
    lock.force_release().await?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_mistakes_fit_on_one_line() {
        let error = Cli::try_parse_from(["verrou", "run", "--url", "redis://h", "true"])
            .expect_err("no --key");
        assert_eq!(
            usage_line(&error.render().to_string()),
            "the following required arguments were not provided: --key <KEY> (see --help)"
        );
    }
}
