//! What the tests of several topologies share.

use std::process::Command;

/// `redis-cli -p PORT ARGS...`: its output, trimmed (an error reply is printed as its text).
pub(crate) fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli is installed with redis-server");
    assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}
