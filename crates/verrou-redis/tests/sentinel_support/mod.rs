//! Helpers shared by the Redis Sentinel test files, each in a file its users include:
//! this one (stores, and `redis-cli`), `topology.rs` (where the servers are), `watch.rs`
//! (what the servers granted and announced, and when) and `contention.rs` (contenders
//! keeping a history of their holds).

use std::process::Command;
use std::time::Duration;

use verrou_redis::{RedisConfig, RedisStore};

/// `redis-cli -p PORT ARGS...`: its output, trimmed (an error reply is printed as its text).
pub(crate) fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli is installed with redis-server");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The value of `field` in an `INFO` text.
pub(crate) fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .map(|value| value.trim().to_owned())
}

/// A store on `url` with short timeouts, `configure` applied, as one process would have.
pub(crate) async fn connect(url: &str, configure: impl FnOnce(&mut RedisConfig)) -> RedisStore {
    let mut config = RedisConfig::new(url);
    config.command_timeout = Duration::from_secs(2);
    config.connect_timeout = Duration::from_secs(1);
    // The grant watchers recognise a grant by its fencing counter's INCR.
    config.fencing_tokens = true;
    configure(&mut config);
    RedisStore::connect(config)
        .await
        .expect("the store connects through the sentinels")
}
