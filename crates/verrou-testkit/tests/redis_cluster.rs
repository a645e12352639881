//! A private Redis Cluster forms within seconds, serves each key from the master of its
//! slot, moves a slot with its keys, and fails over when a master dies.

mod common;

use std::time::{Duration, Instant};

use common::redis_cli;
use verrou_testkit::{hash_slot, ClusterRole, RedisCluster};

#[test]
fn forms_serves_moves_a_slot_and_fails_over() {
    let started = Instant::now();
    let mut cluster = RedisCluster::start().unwrap();
    let took = started.elapsed();
    println!("Redis Cluster (3 masters, 3 replicas) started in {took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");

    let nodes = cluster.nodes().unwrap();
    let ports: Vec<u16> = nodes.iter().map(|node| node.port).collect();
    let seeds: Vec<String> = ports[1..]
        .iter()
        .map(|port| format!("node=127.0.0.1:{port}"))
        .collect();
    assert_eq!(
        cluster.url(),
        format!("redis-cluster://127.0.0.1:{}?{}", ports[0], seeds.join("&"))
    );
    let masters: Vec<u16> = nodes
        .iter()
        .filter(|n| n.is_master())
        .map(|n| n.port)
        .collect();
    assert_eq!(masters, ports[..3]);
    for (replica, master) in nodes[3..].iter().zip(&masters) {
        assert_eq!(
            replica.role,
            ClusterRole::Replica {
                master_port: *master
            }
        );
        assert!(replica.running);
    }
    for port in &ports {
        let info = redis_cli(*port, &["CLUSTER", "INFO"]);
        assert!(info.contains("cluster_state:ok"), "{port}: {info}");
        assert!(info.contains("cluster_known_nodes:6"), "{port}: {info}");
    }

    // A key lives on the master of its slot; the others redirect to it.
    let slot = hash_slot("greeting");
    assert_eq!(
        redis_cli(ports[0], &["CLUSTER", "KEYSLOT", "greeting"]),
        slot.to_string()
    );
    let owner = cluster.master_of_slot(slot).unwrap();
    assert_eq!(redis_cli(owner, &["SET", "greeting", "hello"]), "OK");
    for &port in ports.iter().filter(|&&port| port != owner) {
        assert_eq!(
            redis_cli(port, &["GET", "greeting"]),
            format!("MOVED {slot} 127.0.0.1:{owner}")
        );
        assert_eq!(redis_cli(port, &["-c", "GET", "greeting"]), "hello");
    }

    // A slot moves with its keys; while it moves, moved keys are asked for elsewhere.
    let keys = ["{moving}a", "{moving}b", "{moving}c"];
    let slot = hash_slot("{moving}");
    let from = cluster.master_of_slot(slot).unwrap();
    let to = *masters.iter().find(|&&port| port != from).unwrap();
    for key in keys {
        assert_eq!(redis_cli(from, &["SET", key, key]), "OK");
    }
    let started = Instant::now();
    let migration = cluster.begin_slot_migration(slot, to).unwrap();
    assert!(migration.move_key(keys[0]).unwrap());
    assert!(!migration.move_key(keys[0]).unwrap(), "already moved");
    assert!(migration.move_key("elsewhere").is_err());
    assert_eq!(
        redis_cli(from, &["GET", keys[0]]),
        format!("ASK {slot} 127.0.0.1:{to}")
    );
    assert_eq!(redis_cli(from, &["GET", keys[1]]), keys[1]);
    assert_eq!(migration.move_keys().unwrap(), 2);
    migration.finish().unwrap();
    println!("slot {slot} moved in {:?}", started.elapsed());
    assert_eq!(cluster.master_of_slot(slot).unwrap(), to);
    for key in keys {
        assert_eq!(redis_cli(to, &["GET", key]), key);
        assert_eq!(
            redis_cli(from, &["GET", key]),
            format!("MOVED {slot} 127.0.0.1:{to}")
        );
    }
    assert_eq!(cluster.migrate_slot(slot, from).unwrap(), 3, "and back");
    assert_eq!(cluster.master_of_slot(slot).unwrap(), from);

    // The first master dies; its replica takes over its slots.
    let victim = cluster.master_of_slot(0).unwrap();
    assert_eq!(cluster.kill_master(0).unwrap(), victim);
    let took = cluster.wait_for_failover().unwrap();
    println!("Redis Cluster failed over in {took:?}");
    let promoted = cluster.master_of_slot(0).unwrap();
    assert_eq!(promoted, ports[3], "the victim's replica");
    let nodes = cluster.nodes().unwrap();
    assert!(nodes[0].is_master() && !nodes[0].running);
    assert!(nodes[3].is_master() && nodes[3].running);
    let key = (0..)
        .map(|i| format!("key{i}"))
        .find(|key| cluster.master_of_slot(hash_slot(key)).unwrap() == promoted)
        .unwrap();
    assert_eq!(redis_cli(ports[1], &["-c", "SET", &key, "after"]), "OK");
    assert_eq!(redis_cli(promoted, &["GET", &key]), "after");
}
