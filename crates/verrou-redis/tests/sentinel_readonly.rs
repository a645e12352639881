//! A master turned into a replica behind the sentinels' back (`REPLICAOF`, which leaves its
//! clients connected): a take it answers `READONLY` is an error, never a grant, and the
//! store drops its connection to it at once (fred then asks the sentinels again, and refuses
//! a server that is not a master) instead of writing to a replica until someone closes it.

mod sentinel_support;

use std::collections::HashSet;
use std::error::Error as _;
use std::time::{Duration, Instant};

use sentinel_support::{connect, info_field, redis_cli};
use verrou_core::{Acquisition, LockStore};
use verrou_testkit::{RedisSentinelSet, RedisServer};

/// The ids of the normal client connections of the server on `port`.
fn client_ids(port: u16) -> HashSet<String> {
    redis_cli(port, &["CLIENT", "LIST", "TYPE", "normal"])
        .lines()
        .filter_map(|line| line.split_whitespace().next()?.strip_prefix("id="))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readonly_answer_is_no_grant_and_the_store_leaves_the_replica() {
    let set = RedisSentinelSet::start().expect("a private Redis Sentinel deployment");
    let elsewhere = RedisServer::start().expect("a private redis-server");
    let master = set.master_port().expect("the sentinels name a master");

    let before = client_ids(master);
    let store = connect(&set.url(), |_| {}).await;
    let held = store
        .save("readonly-held", "owner", Some(Duration::from_secs(30)))
        .await;
    assert!(matches!(held, Ok(Acquisition::Granted(_))), "{held:?}");
    let ours: HashSet<String> = client_ids(master).difference(&before).cloned().collect();
    assert!(
        !ours.is_empty(),
        "the store's connection is not on the master"
    );

    // Demoted, with its clients still connected.
    assert_eq!(
        redis_cli(
            master,
            &["REPLICAOF", "127.0.0.1", &elsewhere.port().to_string()]
        ),
        "OK"
    );
    let demoted = Instant::now();
    let answer = store
        .save("readonly-new", "owner", Some(Duration::from_secs(30)))
        .await;
    let error = answer.expect_err("a take written to a replica must fail");
    let cause = error.source().map(ToString::to_string).unwrap_or_default();
    assert!(cause.contains("READONLY"), "{cause}");

    // The store leaves the replica (its connection closes at once; fred does not come back
    // to a server that says it is a replica).
    while !client_ids(master).is_disjoint(&ours) {
        assert!(
            demoted.elapsed() < Duration::from_secs(2),
            "the store kept its connection to the demoted master"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "the store left the demoted master {:.0} ms after it was demoted",
        demoted.elapsed().as_secs_f64() * 1000.0
    );
    // Nothing is granted while the sentinels' master is a replica.
    let meanwhile = store
        .save("readonly-new", "owner", Some(Duration::from_secs(30)))
        .await;
    assert!(meanwhile.is_err(), "{meanwhile:?}");

    // A master again (it synced from `elsewhere`: empty): the same store works again.
    assert_eq!(redis_cli(master, &["REPLICAOF", "NO", "ONE"]), "OK");
    let info = redis_cli(master, &["INFO", "replication"]);
    assert_eq!(info_field(&info, "role").as_deref(), Some("master"));
    let back = Instant::now();
    loop {
        match store
            .save("readonly-back", "owner", Some(Duration::from_secs(30)))
            .await
        {
            Ok(Acquisition::Granted(_)) => break,
            other => {
                assert!(
                    back.elapsed() < Duration::from_secs(10),
                    "the store did not come back: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    println!(
        "the store granted again {:.0} ms after the server was a master again",
        back.elapsed().as_secs_f64() * 1000.0
    );
}
