//! A private Redis Cluster: three masters and a replica for each.

use std::io;
use std::time::{Duration, Instant};

use crate::process;
use crate::redis::{replication, start_redis, Redis, Replication};
use crate::resp::{self, Reply};
use crate::server::Supervisor;

/// How many hash slots a Redis Cluster has.
const SLOTS: u16 = 16_384;

/// How many masters the cluster has (and replicas: one each).
const MASTERS: usize = 3;

/// The configuration of every node. The node timeout, how long a master may be unreachable
/// before its replica takes over, is short, so that failovers take a second or two.
const NODE_CONFIG: &str = "cluster-enabled yes\n\
                           cluster-node-timeout 1000\n\
                           cluster-config-file nodes.conf\n";

/// How long the cluster may take to form, to fail over, or to agree on a slot's new owner.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How many keys one `MIGRATE` moves.
const MIGRATE_BATCH: &str = "100";

/// How long one `MIGRATE` may take, in milliseconds.
const MIGRATE_TIMEOUT_MS: &str = "5000";

/// A private Redis Cluster on 127.0.0.1: three masters, each with one replica, on free
/// ports, without persistence, each node in a temporary directory. The node timeout is
/// 1 s, so a replica takes over from a dead master within a few seconds. Dropping it stops
/// every node and removes their directories; so does the end of the test process, even if
/// the value is never dropped.
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// use verrou_testkit::{hash_slot, RedisCluster};
/// let mut cluster = RedisCluster::start()?;
/// let url = cluster.url(); // for verrou-redis (fred)
/// let slot = hash_slot("{lock}");
/// let owner = cluster.master_of_slot(slot)?;
/// let other = cluster.nodes()?.iter().find(|n| n.is_master() && n.port != owner).unwrap().port;
/// let migration = cluster.begin_slot_migration(slot, other)?;
/// // ... clients now get ASK redirections for keys already moved ...
/// migration.move_keys()?;
/// migration.finish()?; // ... and MOVED redirections to `other`
/// cluster.kill_master(0)?;
/// let took = cluster.wait_for_failover()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    /// The nodes as started: the masters, then their replicas in the same order. Failovers
    /// change their roles, not this order.
    nodes: Vec<Supervisor<Redis>>,
    /// The nodes' cluster ids, in the same order.
    ids: Vec<String>,
    /// When [`kill_master`](Self::kill_master) last killed one.
    last_kill: Option<Instant>,
}

/// A node of a [`RedisCluster`], as [`RedisCluster::nodes`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// The port the node listens on, on 127.0.0.1.
    pub port: u16,
    /// Its cluster node id.
    pub id: String,
    /// Its role, as the cluster sees it.
    pub role: ClusterRole,
    /// Whether its process runs: [`RedisCluster::kill_master`] kills one.
    pub running: bool,
}

impl ClusterNode {
    /// Whether the cluster sees this node as a master (a killed one stays a master without
    /// slots once its replica has taken over).
    pub fn is_master(&self) -> bool {
        self.role == ClusterRole::Master
    }
}

/// The role of a node in a [`RedisCluster`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterRole {
    /// A master (serving hash slots, unless it failed and was replaced).
    Master,
    /// A replica of the master on `master_port`.
    Replica {
        /// The port of its master.
        master_port: u16,
    },
}

impl RedisCluster {
    /// Starts six nodes, makes them a cluster (slots split evenly between the first three,
    /// a replica for each) and waits until every node says `cluster_state:ok` and every
    /// replica is in sync with its master. Takes about two seconds: a new master waits that
    /// long before it declares the cluster ok.
    ///
    /// Fails if `redis-server` is missing, a node does not start, or the cluster does not
    /// form within 30 s.
    pub fn start() -> io::Result<RedisCluster> {
        let nodes = (0..2 * MASTERS)
            .map(|_| start_redis(Redis::Server, NODE_CONFIG))
            .collect::<io::Result<Vec<_>>>()?;
        let ids = nodes
            .iter()
            .map(|node| resp::call_text(node.port(), &["CLUSTER", "MYID"]))
            .collect::<io::Result<Vec<_>>>()?;
        let cluster = RedisCluster {
            nodes,
            ids,
            last_kill: None,
        };
        cluster.form()?;
        Ok(cluster)
    }

    /// The URL to connect to, naming every node:
    /// `redis-cluster://127.0.0.1:P1?node=127.0.0.1:P2&node=...` (fred's form, which
    /// verrou-redis passes on).
    pub fn url(&self) -> String {
        let mut url = String::from("redis-cluster://");
        for (i, node) in self.nodes.iter().enumerate() {
            let separator = match i {
                0 => "",
                1 => "?node=",
                _ => "&node=",
            };
            url.push_str(&format!("{separator}127.0.0.1:{}", node.port()));
        }
        url
    }

    /// Every node, in the order they were started (the first three were the masters), with
    /// its role as the first running node sees it.
    pub fn nodes(&self) -> io::Result<Vec<ClusterNode>> {
        let view = self.view()?;
        self.nodes
            .iter()
            .zip(&self.ids)
            .map(|(node, id)| {
                let entry = find_entry(&view, |entry| entry.id == *id)?;
                let role = match &entry.master_id {
                    None => ClusterRole::Master,
                    Some(master) => ClusterRole::Replica {
                        master_port: find_entry(&view, |entry| entry.id == *master)?.port,
                    },
                };
                Ok(ClusterNode {
                    port: node.port(),
                    id: id.clone(),
                    role,
                    running: node.is_running(),
                })
            })
            .collect()
    }

    /// The port of the master that serves hash `slot`, as the first running node sees it
    /// (see [`hash_slot`]).
    pub fn master_of_slot(&self, slot: u16) -> io::Result<u16> {
        check_slot(slot)?;
        Ok(find_entry(&self.view()?, |entry| entry.serves(slot))?.port)
    }

    /// Kills the `index`-th running master, in [`nodes`](Self::nodes) order, outright
    /// (`SIGKILL`, as [`RedisServer::kill`](crate::RedisServer::kill) does) and returns its
    /// port. Its replica takes over after the node timeout (1 s); see
    /// [`wait_for_failover`](Self::wait_for_failover).
    pub fn kill_master(&mut self, index: usize) -> io::Result<u16> {
        let port = self
            .nodes()?
            .into_iter()
            .filter(|node| node.running && node.is_master())
            .nth(index)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("there is no running master number {index}"),
                )
            })?
            .port;
        if let Some(node) = self.nodes.iter_mut().find(|node| node.port() == port) {
            node.kill("KILL");
        }
        self.last_kill = Some(Instant::now());
        Ok(port)
    }

    /// Waits until every running node says `cluster_state:ok` and sees every slot served
    /// by a running master, and returns how long that took since the last
    /// [`kill_master`](Self::kill_master) (since this call if none).
    pub fn wait_for_failover(&self) -> io::Result<Duration> {
        let since = self.last_kill.unwrap_or_else(Instant::now);
        process::wait_for("the cluster's failover", SETTLE_TIMEOUT, || {
            Ok(self.is_settled(false)?.then_some(()))
        })?;
        Ok(since.elapsed())
    }

    /// Starts moving hash `slot` from its master to the master on port `to`, with the
    /// protocol `redis-cli --cluster reshard` follows: the slot is marked `IMPORTING` on
    /// `to` and `MIGRATING` on its owner. Until [`SlotMigration::finish`], clients are sent
    /// to `to` (`ASK`) for the slot's keys that are not, or no longer, on the owner.
    ///
    /// Dropping the migration unfinished leaves the slot half-migrated, as a migration tool
    /// that crashed would.
    pub fn begin_slot_migration(&self, slot: u16, to: u16) -> io::Result<SlotMigration<'_>> {
        check_slot(slot)?;
        let view = self.view()?;
        let source = find_entry(&view, |entry| entry.serves(slot))?;
        let target = find_entry(&view, |entry| entry.port == to && entry.master_id.is_none())?;
        if source.port == to {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("slot {slot} is already on 127.0.0.1:{to}"),
            ));
        }
        let slot_arg = slot.to_string();
        resp::call_ok(
            to,
            &["CLUSTER", "SETSLOT", &slot_arg, "IMPORTING", &source.id],
        )?;
        resp::call_ok(
            source.port,
            &["CLUSTER", "SETSLOT", &slot_arg, "MIGRATING", &target.id],
        )?;
        Ok(SlotMigration {
            cluster: self,
            slot,
            source: source.port,
            target: to,
            target_id: target.id.clone(),
        })
    }

    /// Moves hash `slot`, and its keys, from its master to the master on port `to`; returns
    /// how many keys moved. See [`begin_slot_migration`](Self::begin_slot_migration) to do
    /// things while it moves.
    pub fn migrate_slot(&self, slot: u16, to: u16) -> io::Result<usize> {
        let migration = self.begin_slot_migration(slot, to)?;
        let moved = migration.move_keys()?;
        migration.finish()?;
        Ok(moved)
    }

    /// Makes the nodes a cluster and waits until it is settled.
    fn form(&self) -> io::Result<()> {
        let ports: Vec<u16> = self.nodes.iter().map(Supervisor::port).collect();
        let slots = usize::from(SLOTS);
        for (i, &port) in ports.iter().enumerate() {
            // Distinct epochs from the start, as `redis-cli --cluster create` gives them:
            // otherwise the nodes first have to sort out their collisions.
            resp::call_ok(port, &["CLUSTER", "SET-CONFIG-EPOCH", &(i + 1).to_string()])?;
            if i < MASTERS {
                let first = (i * slots / MASTERS).to_string();
                let last = ((i + 1) * slots / MASTERS - 1).to_string();
                resp::call_ok(port, &["CLUSTER", "ADDSLOTSRANGE", &first, &last])?;
            }
        }
        let first = ports[0].to_string();
        for &port in &ports[1..] {
            resp::call_ok(port, &["CLUSTER", "MEET", "127.0.0.1", &first])?;
        }
        process::wait_for("the cluster's nodes to meet", SETTLE_TIMEOUT, || {
            for &port in &ports {
                let view = view_from(port)?;
                if view.len() != ports.len()
                    || view
                        .iter()
                        .any(|entry| entry.has_flag("handshake") || entry.has_flag("noaddr"))
                {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        })?;
        for (replica, master) in ports[MASTERS..].iter().zip(&self.ids) {
            resp::call_ok(*replica, &["CLUSTER", "REPLICATE", master])?;
        }
        process::wait_for("the cluster to form", SETTLE_TIMEOUT, || {
            Ok(self.is_settled(true)?.then_some(()))
        })
    }

    /// Whether every running node says `cluster_state:ok` and sees every slot served by a
    /// running master; if `fully`, also whether each sees the whole cluster formed (see
    /// [`is_formed`]) and, if a replica, is in sync with its master.
    fn is_settled(&self, fully: bool) -> io::Result<bool> {
        for node in self.nodes.iter().filter(|node| node.is_running()) {
            let info = resp::call_text(node.port(), &["CLUSTER", "INFO"])?;
            if resp::field(&info, "cluster_state") != Some("ok") {
                return Ok(false);
            }
            let view = view_from(node.port())?;
            let runs = |port| {
                self.nodes
                    .iter()
                    .any(|n| n.port() == port && n.is_running())
            };
            if view
                .iter()
                .any(|entry| !entry.slots.is_empty() && !runs(entry.port))
            {
                return Ok(false);
            }
            if fully
                && !(is_formed(&view)
                    && replication(node.port())? != (Replication::Replica { in_sync: false }))
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The cluster as the first running node sees it.
    fn view(&self) -> io::Result<Vec<NodeEntry>> {
        let node = self
            .nodes
            .iter()
            .find(|node| node.is_running())
            .ok_or_else(|| io::Error::other("no node of the cluster runs"))?;
        view_from(node.port())
    }
}

/// A migration of one hash slot between two masters of a [`RedisCluster`], begun by
/// [`RedisCluster::begin_slot_migration`]. Between its steps, clients see the slot's keys
/// on either master, and are redirected with `ASK` (or get `TRYAGAIN` for commands on
/// several keys, some moved and some not).
#[derive(Debug)]
pub struct SlotMigration<'a> {
    cluster: &'a RedisCluster,
    slot: u16,
    source: u16,
    target: u16,
    target_id: String,
}

impl SlotMigration<'_> {
    /// Moves every key still in the slot on the source master to the target (`MIGRATE`,
    /// 100 keys at a time) and returns how many moved. Keys written on the source meanwhile
    /// are moved too.
    pub fn move_keys(&self) -> io::Result<usize> {
        let slot = self.slot.to_string();
        let mut moved = 0;
        loop {
            let keys = resp::call(
                self.source,
                &["CLUSTER", "GETKEYSINSLOT", &slot, MIGRATE_BATCH],
            )?
            .array()?
            .into_iter()
            .map(Reply::text)
            .collect::<io::Result<Vec<_>>>()?;
            if keys.is_empty() {
                return Ok(moved);
            }
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            self.migrate(&keys)?;
            moved += keys.len();
        }
    }

    /// Moves `key` (which must be in the slot) to the target; `false` if the source did
    /// not have it. For the in-between states of commands on several keys of one slot.
    pub fn move_key(&self, key: &str) -> io::Result<bool> {
        if hash_slot(key) != self.slot {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("key {key:?} is not in slot {}", self.slot),
            ));
        }
        self.migrate(&[key])
    }

    /// Moves any keys left, then gives the slot to the target on the target, the source
    /// and the other running masters (in that order, as `redis-cli` does), and waits until
    /// every running node sees the target serve it.
    pub fn finish(self) -> io::Result<()> {
        self.move_keys()?;
        let slot = self.slot.to_string();
        let others = self.cluster.nodes()?.into_iter().filter(|node| {
            node.running && node.is_master() && ![self.source, self.target].contains(&node.port)
        });
        let owners = [self.target, self.source]
            .into_iter()
            .chain(others.map(|node| node.port));
        for port in owners {
            resp::call_ok(
                port,
                &["CLUSTER", "SETSLOT", &slot, "NODE", &self.target_id],
            )?;
        }
        process::wait_for(
            "the cluster to agree on a slot's owner",
            SETTLE_TIMEOUT,
            || {
                for node in self.cluster.nodes.iter().filter(|node| node.is_running()) {
                    let view = view_from(node.port())?;
                    if find_entry(&view, |entry| entry.serves(self.slot))?.port != self.target {
                        return Ok(None);
                    }
                }
                Ok(Some(()))
            },
        )
    }

    /// `MIGRATE`s `keys` from the source to the target; `false` if none was there.
    fn migrate(&self, keys: &[&str]) -> io::Result<bool> {
        let target = self.target.to_string();
        let mut args = vec![
            "MIGRATE",
            "127.0.0.1",
            &target,
            "",
            "0",
            MIGRATE_TIMEOUT_MS,
            "KEYS",
        ];
        args.extend_from_slice(keys);
        Ok(resp::call_text(self.source, &args)? == "OK")
    }
}

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of the key, or of its hash tag (the
/// text between the first `{` and the next `}`, if not empty), modulo 16384.
pub fn hash_slot(key: &str) -> u16 {
    let key = key.as_bytes();
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            Some(&rest[..close]).filter(|tag| !tag.is_empty())
        })
        .unwrap_or(key);
    crc16_xmodem(hashed) % SLOTS
}

/// CRC-16/XMODEM (polynomial 0x1021, initial value 0), as Redis Cluster uses it.
fn crc16_xmodem(data: &[u8]) -> u16 {
    data.iter().fold(0, |crc, &byte| {
        (0..8).fold(crc ^ (u16::from(byte) << 8), |crc, _| {
            if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            }
        })
    })
}

/// An error unless `slot` is a hash slot.
fn check_slot(slot: u16) -> io::Result<()> {
    if slot < SLOTS {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{slot} is not a hash slot (0 to {})", SLOTS - 1),
        ))
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Debug)]
struct NodeEntry {
    id: String,
    port: u16,
    flags: Vec<String>,
    /// The master's id, for a replica.
    master_id: Option<String>,
    /// Whether the node that replied is connected to this one.
    connected: bool,
    /// The slot ranges it serves (first and last), not counting slots being imported.
    slots: Vec<(u16, u16)>,
}

impl NodeEntry {
    /// Parses `ID IP:PORT@BUSPORT[,HOSTNAME] FLAGS MASTER PING PONG EPOCH LINK SLOTS...`.
    fn parse(line: &str) -> Option<NodeEntry> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [id, address, flags, master, _, _, _, link, slots @ ..] = fields.as_slice() else {
            return None;
        };
        let host_port = address.split('@').next()?;
        let port = host_port.rsplit(':').next()?.parse().ok()?;
        let slots = slots
            .iter()
            .filter(|range| !range.starts_with('['))
            .map(|range| {
                let (first, last) = range.split_once('-').unwrap_or((range, range));
                Some((first.parse().ok()?, last.parse().ok()?))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(NodeEntry {
            id: (*id).to_owned(),
            port,
            flags: flags.split(',').map(str::to_owned).collect(),
            master_id: Some(*master)
                .filter(|&master| master != "-")
                .map(str::to_owned),
            connected: *link == "connected",
            slots,
        })
    }

    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    fn serves(&self, slot: u16) -> bool {
        self.slots
            .iter()
            .any(|&(first, last)| (first..=last).contains(&slot))
    }
}

/// The cluster as the node on `port` sees it (`CLUSTER NODES`).
fn view_from(port: u16) -> io::Result<Vec<NodeEntry>> {
    resp::call_text(port, &["CLUSTER", "NODES"])?
        .lines()
        .map(|line| {
            NodeEntry::parse(line).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected CLUSTER NODES line {line:?}"),
                )
            })
        })
        .collect()
}

/// Whether `view` shows the cluster [`RedisCluster::start`] makes: every node known,
/// connected and not failing, [`MASTERS`] masters with slots, the others their replicas.
fn is_formed(view: &[NodeEntry]) -> bool {
    let has_slots = |id: &str| view.iter().any(|e| e.id == id && !e.slots.is_empty());
    view.len() == 2 * MASTERS
        && view.iter().filter(|e| e.master_id.is_none()).count() == MASTERS
        && view.iter().all(|entry| {
            entry.connected
                && !entry.has_flag("fail")
                && !entry.has_flag("fail?")
                && has_slots(entry.master_id.as_deref().unwrap_or(&entry.id))
        })
}

/// The first entry of `view` that `wanted`, or an error.
fn find_entry(view: &[NodeEntry], wanted: impl Fn(&NodeEntry) -> bool) -> io::Result<&NodeEntry> {
    view.iter()
        .find(|entry| wanted(entry))
        .ok_or_else(|| io::Error::other(format!("no such node in the cluster: {view:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_slots_match_redis() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
        assert_eq!(hash_slot("foo"), 12182);
        assert_eq!(hash_slot("bar"), 5061);
        assert_eq!(hash_slot(""), 0);
        assert_eq!(
            hash_slot("{user1000}.following"),
            hash_slot("{user1000}.followers")
        );
        assert_eq!(hash_slot("{user1000}.following"), hash_slot("user1000"));
        // An empty tag is no tag; only the first `{` counts.
        assert_eq!(hash_slot("foo{}{bar}"), crc16_xmodem(b"foo{}{bar}") % SLOTS);
        assert_eq!(hash_slot("foo{{bar}}zap"), hash_slot("{bar"));
        assert_eq!(hash_slot("foo{bar}{zap}"), hash_slot("bar"));
    }

    #[test]
    fn node_lines_parse() {
        let line = "07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host \
                    slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected";
        let entry = NodeEntry::parse(line).unwrap();
        assert_eq!(entry.port, 30004);
        assert!(entry.has_flag("slave"));
        assert_eq!(
            entry.master_id.as_deref(),
            Some("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca")
        );
        assert!(entry.slots.is_empty());

        let line = "e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 \
                    myself,master - 0 0 1 connected 0-5460 6000 [5461->-abc] [5462-<-def]";
        let entry = NodeEntry::parse(line).unwrap();
        assert_eq!(entry.master_id, None);
        assert_eq!(entry.slots, [(0, 5460), (6000, 6000)]);
        assert!(entry.serves(6000) && entry.serves(0) && !entry.serves(5461));
    }
}
