//! The `verrou-test-servers` program: servers for a command, and nothing left behind.

use std::io::{self, BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use verrou_testkit::{POSTGRES_URL_VAR, REDIS_URL_VAR};

const RUNNER: &str = env!("CARGO_BIN_EXE_verrou-test-servers");

/// Prints both URLs on one line.
const PRINT_URLS: &str = r#"echo "$VERROU_REDIS_URL $VERROU_POSTGRES_URL""#;

/// The port of a `scheme://[user@]127.0.0.1:PORT[/path]` URL.
fn local_port(url: &str) -> u16 {
    let rest = url.split_once("127.0.0.1:").unwrap().1;
    rest.split('/').next().unwrap().parse().unwrap()
}

fn refuses_connections(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port))
        .is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused)
}

/// The scratch directories the process `pid` created (`verrou-KIND-PID-N`).
fn scratch_dirs_of(pid: u32) -> Vec<PathBuf> {
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            let parts: Vec<&str> = name.split('-').collect();
            parts.len() == 4 && parts[0] == "verrou" && parts[2] == pid.to_string()
        })
        .collect()
}

#[test]
fn runs_the_command_with_a_server_and_passes_its_exit_code_on() {
    let runner = Command::new(RUNNER)
        .args(["sh", "-c", &format!("{PRINT_URLS}; exit 3")])
        .env_remove(REDIS_URL_VAR)
        .env(POSTGRES_URL_VAR, "postgres://u@postgres.example/db")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = runner.id();
    let output = runner.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");

    let (redis, postgres) = stdout.trim().split_once(' ').unwrap();
    assert_eq!(
        postgres, "postgres://u@postgres.example/db",
        "already set: kept"
    );
    assert!(redis.starts_with("redis://127.0.0.1:"), "{stdout}");
    assert!(
        stderr.contains(&format!("Redis listening on {redis}")),
        "{stderr}"
    );
    // Stopped and cleaned up before the runner exited.
    assert!(refuses_connections(local_port(redis)));
    assert_eq!(scratch_dirs_of(pid), Vec::<PathBuf>::new());
}

#[test]
fn reports_death_by_signal_as_128_plus_the_signal() {
    let status = Command::new(RUNNER)
        .args(["sh", "-c", "kill -TERM $$"])
        .env(REDIS_URL_VAR, "redis://redis.example:6379")
        .env(POSTGRES_URL_VAR, "postgres://u@postgres.example/db")
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(128 + 15));
}

#[test]
fn without_a_command_prints_usage() {
    let output = Command::new(RUNNER).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("usage"));
}

#[test]
fn servers_go_away_when_the_runner_is_killed() {
    let mut runner = Command::new(RUNNER)
        .args(["sh", "-c", &format!("{PRINT_URLS}; exec cat")])
        .env_remove(REDIS_URL_VAR)
        .env_remove(POSTGRES_URL_VAR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = runner.id();
    let mut line = String::new();
    BufReader::new(runner.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let (redis, postgres) = line.trim().split_once(' ').unwrap();
    let ports = [local_port(redis), local_port(postgres)];
    for port in ports {
        TcpStream::connect(("127.0.0.1", port)).unwrap();
    }
    assert_eq!(scratch_dirs_of(pid).len(), 2);

    // SIGKILL: no destructor runs; the servers' watchdogs must notice on their own.
    runner.kill().unwrap();
    runner.wait().unwrap();
    drop(runner.stdin.take()); // ends `cat`

    let deadline = Instant::now() + Duration::from_secs(20);
    while !(ports.iter().all(|&port| refuses_connections(port)) && scratch_dirs_of(pid).is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "still up or left behind: ports {ports:?}, dirs {:?}",
            scratch_dirs_of(pid)
        );
        sleep(Duration::from_millis(50));
    }
}
