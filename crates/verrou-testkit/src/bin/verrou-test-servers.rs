//! `verrou-test-servers COMMAND [ARGS...]`: runs COMMAND with a private Redis server and a
//! private PostgreSQL cluster, named by `VERROU_REDIS_URL` and `VERROU_POSTGRES_URL`, then
//! stops them and exits with COMMAND's exit code (128 + N if a signal N ended COMMAND).
//!
//! A variable that is already set is passed on as it is, and no server of that kind is
//! started. The servers stop even if this program is interrupted or killed: they watch it.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode};

use verrou_testkit::{env_url, PostgresServer, RedisServer, POSTGRES_URL_VAR, REDIS_URL_VAR};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: verrou-test-servers COMMAND [ARGS...]");
        return ExitCode::from(2);
    };
    match run(program, args.collect()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("verrou-test-servers: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Starts the servers, runs the command, stops the servers (on return, by drop).
fn run(program: OsString, args: Vec<OsString>) -> io::Result<ExitCode> {
    let mut command = Command::new(&program);
    command.args(args);

    let _redis = match env_url(REDIS_URL_VAR) {
        Some(url) => {
            eprintln!("verrou-test-servers: Redis: {REDIS_URL_VAR}={url} (already set)");
            None
        }
        None => {
            let server = RedisServer::start()?;
            eprintln!("verrou-test-servers: Redis listening on {}", server.url());
            command.env(REDIS_URL_VAR, server.url());
            Some(server)
        }
    };
    let _postgres = match env_url(POSTGRES_URL_VAR) {
        Some(url) => {
            eprintln!("verrou-test-servers: PostgreSQL: {POSTGRES_URL_VAR}={url} (already set)");
            None
        }
        None => {
            let server = PostgresServer::start()?;
            eprintln!(
                "verrou-test-servers: PostgreSQL listening on {}",
                server.url()
            );
            command.env(POSTGRES_URL_VAR, server.url());
            Some(server)
        }
    };

    let status = command.status().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot run {}: {e}", program.to_string_lossy()),
        )
    })?;
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    };
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
