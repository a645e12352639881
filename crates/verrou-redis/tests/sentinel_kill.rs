//! The master killed (`kill -9`) under contenders in several "processes" (one store each):
//! the sentinels promote the replica, and the same stores carry on with it within seconds;
//! fencing tokens never go back.

#[path = "sentinel_support/contention.rs"]
mod contention;
mod sentinel_support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use contention::Contention;
use sentinel_support::{info_field, redis_cli};
use verrou_testkit::RedisSentinelSet;

/// The longest the stores may take to grant again after the master died: the sentinels
/// notice after 1 s without an answer and fail over in one or two more; the stores' clients
/// retry the sentinels at most 2 s apart.
const RECOVERY_LIMIT: Duration = Duration::from_secs(8);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_carry_on_with_the_new_master_when_the_master_dies() {
    let mut set = RedisSentinelSet::start().expect("a private Redis Sentinel deployment");
    let keys: Vec<String> = (0..3).map(|n| format!("kill-{n}")).collect();
    let mut contention = Contention::start(&set.url(), 4, &keys, |_| {}).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let killed = Instant::now();
    let killed_at = SystemTime::now();
    let old = set.kill_master().expect("the master is killed");
    let switched = tokio::task::block_in_place(|| set.wait_for_new_master(old))
        .expect("the sentinels fail over");
    // Contend until the stores grant again, and a little longer.
    let recovered = loop {
        if let Some(first) = contention.grants_since(killed_at).into_iter().min() {
            break first.duration_since(killed_at).unwrap_or_default();
        }
        assert!(
            killed.elapsed() < RECOVERY_LIMIT,
            "no grant within {RECOVERY_LIMIT:?} of the master's death"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    contention.stop().await;

    let new = set.master_port().expect("the sentinels name a master");
    let role = info_field(&redis_cli(new, &["INFO", "replication"]), "role");
    assert_eq!(role.as_deref(), Some("master"), "the sentinels' new master");
    let verdict = contention.history.verdict();
    println!(
        "master killed: the sentinels switched after {:.0} ms; the stores granted again {:.0} ms after the kill ({} calls failed meanwhile)",
        switched.as_secs_f64() * 1000.0,
        recovered.as_secs_f64() * 1000.0,
        contention.errors.load(Ordering::SeqCst)
    );
    println!(
        "{} holds, {} overlaps (grants the dead master had not replicated), {} token regressions",
        verdict.holds,
        verdict.overlaps.len(),
        verdict.token_regressions.len()
    );
    assert!(
        verdict.token_regressions.is_empty(),
        "fencing tokens went back across the failover: {:?}",
        verdict.token_regressions
    );
    // Outside the grants the dead master took with it, mutual exclusion holds.
    for (earlier, later) in &verdict.overlaps {
        assert!(
            earlier.granted_at <= killed,
            "an overlap that the master's death does not explain: {earlier:?} / {later:?}"
        );
    }
}
