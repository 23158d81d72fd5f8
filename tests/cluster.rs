//! tidings on a real Redis Cluster: three masters (`redis-server --cluster-enabled yes`, joined
//! with `redis-cli --cluster create`), one cluster per test.
//!
//! - The store behaviours that matter on a cluster (append, history, replay with trimming, tail
//!   with gaps, wake), for channels spread over many slots and all three masters, through every
//!   way of naming the cluster; nothing may fail with `CROSSSLOT`.
//! - Two real `tidings` processes on the cluster: an emit through one reaches a subscriber of the
//!   other exactly once and in order, and a client of a SIGKILLed node resumes on the other
//!   without losing anything.
//! - `CLIENT LIST` on every cluster node shows the same number of connections from each tidings
//!   process with 1 or 100 SSE clients and channels: one command connection plus one
//!   subscription per master.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::Value;
use support::{at, msg, pos, Binary, Spawn, SseReader, EMIT_KEY};
use tidings::store::{AppendOptions, Position};
use tidings::{Channel, Range, RedisOptions, RedisStore, Retention, Store, StreamId, TailMode};

/// "Promptly": well below every `wait` used when a tail is expected to return early.
const PROMPT: Duration = Duration::from_secs(3);
/// A tail wait long enough that returning before [`PROMPT`] proves it returned early.
const LONG_WAIT: Duration = Duration::from_secs(10);
/// Connections one tidings process may hold to one master: a command connection and a
/// keyspace subscription.
const PER_MASTER: usize = 2;

// ---------------------------------------------------------------------------------------------
// A three-master cluster
// ---------------------------------------------------------------------------------------------

/// Three cluster-enabled redis-servers in temp dirs, joined into one cluster; killed on drop.
struct Cluster {
    nodes: Vec<Child>,
    ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

/// A free port whose cluster bus port (`port + 10000`) is free too.
fn free_cluster_port(taken: &[u16]) -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if port >= 55_000 || taken.contains(&port) || taken.contains(&(port + 10_000)) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// Runs a `redis-cli` command and panics with its output when it fails.
fn redis_cli(cmd: &mut Command) {
    let out = cmd.output().expect("run redis-cli");
    assert!(
        out.status.success(),
        "redis-cli failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ping(port: u16) -> bool {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .is_ok()
}

impl Cluster {
    /// Three masters.
    fn start() -> Cluster {
        Self::start_with(false)
    }

    /// Three masters and, with `replica`, a fourth node (index 3) replicating node 0.
    fn start_with(replica: bool) -> Cluster {
        for _ in 0..3 {
            if let Some(cluster) = Self::try_start(replica) {
                return cluster;
            }
        }
        panic!("could not start a 3-master Redis Cluster");
    }

    fn spawn_node(&mut self, port: u16) {
        let node_dir = self._dir.path().join(port.to_string());
        std::fs::create_dir(&node_dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
            .args(["--cluster-node-timeout", "3000"])
            // A replica is listed in CLUSTER SLOTS once it has a replication offset: have the
            // (idle) master ping it every second, and sync it without delay.
            .args([
                "--repl-diskless-sync-delay",
                "0",
                "--repl-ping-replica-period",
                "1",
            ])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&node_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (apt-get install -y redis-server)");
        self.nodes.push(child);
    }

    fn try_start(replica: bool) -> Option<Cluster> {
        let mut ports = Vec::new();
        for _ in 0..if replica { 4 } else { 3 } {
            ports.push(free_cluster_port(&ports));
        }
        let mut cluster = Cluster {
            nodes: Vec::new(),
            ports: ports.clone(),
            _dir: tempfile::tempdir().unwrap(),
        };
        for &port in &ports {
            cluster.spawn_node(port);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ports.iter().all(|&p| ping(p)) {
            if Instant::now() > deadline
                || cluster
                    .nodes
                    .iter_mut()
                    .any(|c| matches!(c.try_wait(), Ok(Some(_))))
            {
                return None; // a port was taken meanwhile: try others
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        redis_cli(
            Command::new("redis-cli")
                .arg("--cluster")
                .arg("create")
                .args(ports[..3].iter().map(|p| format!("127.0.0.1:{p}")))
                .args(["--cluster-replicas", "0", "--cluster-yes"]),
        );
        if replica {
            let master_id: String = redis::cmd("CLUSTER")
                .arg("MYID")
                .query(&mut cluster.conn(0))
                .unwrap();
            redis_cli(
                Command::new("redis-cli")
                    .args(["--cluster", "add-node"])
                    .arg(format!("127.0.0.1:{}", ports[3]))
                    .arg(format!("127.0.0.1:{}", ports[0]))
                    .args(["--cluster-slave", "--cluster-master-id", &master_id]),
            );
        }
        // Every node must say the cluster is ok and agree on the three masters (and the replica
        // must be in sync).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = (0..ports.len()).all(|i| {
                let mut conn = cluster.conn(i);
                let info = cluster.cluster_info(i);
                let ranges: Vec<Vec<redis::Value>> =
                    redis::cmd("CLUSTER").arg("SLOTS").query(&mut conn).unwrap();
                let nodes_per_range: Vec<usize> = ranges.iter().map(|r| r.len() - 2).collect();
                let want: &[usize] = if replica { &[2, 1, 1] } else { &[1, 1, 1] };
                let mut sorted = nodes_per_range.clone();
                sorted.sort_unstable_by(|a, b| b.cmp(a));
                info.contains("cluster_state:ok") && sorted == want
            }) && (!replica || cluster.info(3, "replication").contains("master_link_status:up"));
            if ready {
                return Some(cluster);
            }
            assert!(Instant::now() < deadline, "the cluster did not become ok");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `CLUSTER INFO` of node `i`.
    fn cluster_info(&self, i: usize) -> String {
        redis::cmd("CLUSTER")
            .arg("INFO")
            .query(&mut self.conn(i))
            .unwrap()
    }

    /// `INFO <section>` of node `i`.
    fn info(&self, i: usize, section: &str) -> String {
        redis::cmd("INFO").arg(section).query(&mut self.conn(i)).unwrap()
    }

    /// Seeds for `--redis`: the three masters, comma-separated.
    fn seeds(&self) -> String {
        self.ports[..3]
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn url(&self, i: usize) -> String {
        format!("redis://127.0.0.1:{}/", self.ports[i])
    }

    /// A plain connection to node `i`.
    fn conn(&self, i: usize) -> redis::Connection {
        redis::Client::open(self.url(i))
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// The node that owns `key`'s slot (the others answer `MOVED`).
    fn owner(&self, key: &str) -> usize {
        (0..self.ports.len())
            .find(|&i| {
                redis::cmd("EXISTS")
                    .arg(key)
                    .query::<i64>(&mut self.conn(i))
                    .is_ok()
            })
            .unwrap_or_else(|| panic!("no node owns {key}"))
    }

    /// `DBSIZE` of every node.
    fn dbsizes(&self) -> Vec<usize> {
        (0..3)
            .map(|i| redis::cmd("DBSIZE").query(&mut self.conn(i)).unwrap())
            .collect()
    }
}

impl Cluster {
    /// SIGKILLs node `i`: no goodbye, no failover handshake.
    fn kill(&mut self, i: usize) {
        let _ = self.nodes[i].kill();
        let _ = self.nodes[i].wait();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.nodes {
            let _ = child.kill();
        }
        for child in &mut self.nodes {
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The store on the cluster
// ---------------------------------------------------------------------------------------------

fn ch(name: &str) -> Channel {
    Channel::new(name).unwrap()
}

async fn open(url: &str, prefix: &str, retention: Retention) -> RedisStore {
    RedisStore::connect(RedisOptions::new(url).key_prefix(prefix).retention(retention))
        .await
        .unwrap_or_else(|e| panic!("connect to the cluster at {url}: {e}"))
}

/// Appends `n` entries to `channel` and returns their ids.
async fn append_n(store: &RedisStore, channel: &Channel, n: usize) -> Vec<StreamId> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(
            store
                .append(
                    channel,
                    "chat.message",
                    &format!(r#"{{"n":{i}}}"#),
                    AppendOptions::default(),
                )
                .await
                .unwrap()
                .id,
        );
    }
    ids
}

async fn held(store: &RedisStore, channel: &Channel) -> Vec<StreamId> {
    store
        .history(channel, Range::Latest, 100_000)
        .await
        .unwrap()
        .entries
        .iter()
        .map(|e| e.id)
        .collect()
}

/// Channels whose keys (`<prefix><name>`) land on each of the three nodes, `per_node` each.
fn channels_per_node(cluster: &Cluster, prefix: &str, base: &str, per_node: usize) -> Vec<Vec<Channel>> {
    let mut out = vec![Vec::new(), Vec::new(), Vec::new()];
    for i in 0.. {
        let name = format!("{base}:{i}");
        let node = cluster.owner(&format!("{prefix}{name}"));
        if out[node].len() < per_node {
            out[node].push(ch(&name));
        }
        if out.iter().all(|v| v.len() == per_node) {
            return out;
        }
        assert!(i < 1000, "keys do not spread over the nodes");
    }
    unreachable!()
}

/// For one channel per master in turn: an append 300 ms into a long tail ends it promptly (so
/// a notification from that master woke it, not the tail's periodic full read).
async fn notified_on_every_master(
    store: &std::sync::Arc<RedisStore>,
    one_per_node: &[Channel],
    positions: &mut [(Channel, StreamId)],
    when: &str,
) {
    for (node, c) in one_per_node.iter().enumerate() {
        let appender = tokio::spawn({
            let (store, c) = (store.clone(), c.clone());
            async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                store
                    .append(&c, "chat.message", "{}", AppendOptions::default())
                    .await
                    .unwrap()
                    .id
            }
        });
        let start = Instant::now();
        let batches = store.tail(&at(positions), LONG_WAIT, 10).await.unwrap();
        let id = appender.await.unwrap();
        assert!(
            start.elapsed() < PROMPT,
            "node {node}{when}: tail took {:?}",
            start.elapsed()
        );
        assert_eq!(batches.len(), 1, "node {node}{when}: {batches:?}");
        assert_eq!(batches[0].channel, *c);
        assert_eq!(batches[0].entries[0].id, id);
        positions[node].1 = id;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_behaviours_hold_across_slots_and_masters() {
    let started = Instant::now();
    let cluster = Cluster::start();
    let store = open(&cluster.seeds(), "t:", Retention::default()).await;
    assert!(store.is_cluster());
    assert_eq!(store.kind(), "redis");
    assert_eq!(store.tail_mode(), TailMode::Keyspace);
    store.ping().await.unwrap();

    // Append, history and last id on 30 channels: their keys land on every master.
    let rooms: Vec<Channel> = (0..30).map(|i| ch(&format!("room:{i}"))).collect();
    let mut appended = Vec::new();
    for room in &rooms {
        appended.push(append_n(&store, room, 3).await);
    }
    for (room, ids) in rooms.iter().zip(&appended) {
        assert_eq!(held(&store, room).await, *ids, "{room}");
        assert_eq!(store.position(room).await.unwrap().id, ids[2], "{room}");
        let after: Vec<StreamId> = store
            .history(room, Range::After(ids[0]), 10)
            .await
            .unwrap()
            .entries
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(after, ids[1..], "{room}");
    }
    let sizes = cluster.dbsizes();
    println!("keys per node: {sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 30);
    assert!(
        sizes.iter().filter(|&&n| n > 0).count() >= 2,
        "channel keys should spread over the masters: {sizes:?}"
    );
    let slots: HashSet<i64> = rooms
        .iter()
        .map(|r| {
            redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(format!("t:{r}"))
                .query(&mut cluster.conn(0))
                .unwrap()
        })
        .collect();
    assert!(slots.len() >= 20, "30 channels in only {} slots", slots.len());

    // One tail over every channel (each in its own slot): no CROSSSLOT, every batch right.
    let mut positions: Vec<(Channel, StreamId)> = rooms
        .iter()
        .zip(&appended)
        .enumerate()
        .map(|(i, (r, ids))| (r.clone(), if i % 2 == 0 { StreamId::ZERO } else { ids[0] }))
        .collect();
    positions.push((ch("never.written"), StreamId::ZERO));
    let batches = store.tail(&at(&positions), PROMPT, 100).await.unwrap();
    assert_eq!(batches.len(), 30, "{batches:?}");
    for batch in &batches {
        let i: usize = batch.channel.as_str()["room:".len()..].parse().unwrap();
        let want = if i % 2 == 0 {
            &appended[i][..]
        } else {
            &appended[i][1..]
        };
        let got: Vec<StreamId> = batch.entries.iter().map(|e| e.id).collect();
        assert_eq!(got, want, "{}", batch.channel);
        assert!(!batch.gap, "{}", batch.channel);
    }

    // Epochs and idempotency across slots: every channel has its own epoch, and an idempotent
    // append (a script over the stream and its record, which share the stream's slot) stores once.
    let mut epochs = HashSet::new();
    for room in &rooms {
        epochs.insert(store.position(room).await.unwrap().epoch.expect("an epoch"));
    }
    assert_eq!(epochs.len(), rooms.len());
    for room in (0..10).map(|i| ch(&format!("idem:{i}"))) {
        let room = &room;
        let opts = AppendOptions::default().idempotency_key("order-1");
        let first = store.append(room, "chat.message", "{}", opts).await.unwrap();
        let retry = store.append(room, "chat.message", "{}", opts).await.unwrap();
        assert!(
            !first.duplicate && retry.duplicate && retry.id == first.id,
            "{room}"
        );
    }
    // A stream deleted and created again is another history, with greater ids: the epoch says so.
    let gone = ch("gone");
    let old = append_n(&store, &gone, 2).await;
    let before = Position::new(old[1], store.position(&gone).await.unwrap().epoch);
    let deleted = (0..3).any(|i| {
        redis::cmd("DEL")
            .arg("t:gone")
            .query::<i64>(&mut cluster.conn(i))
            .is_ok_and(|n| n == 1)
    });
    assert!(deleted, "t:gone was deleted on its master");
    let again = append_n(&store, &gone, 1).await;
    let r = store.replay(&gone, before, 10).await.unwrap();
    let t = r.trimmed.expect("a reset");
    assert_eq!(t.reason, tidings::store::Lost::Replaced);
    assert_eq!(r.entries.iter().map(|e| e.id).collect::<Vec<_>>(), again);

    // Replay and tail across trimming, on channels of different masters, in one tail call.
    let capped = open(&cluster.seeds(), "c:", Retention::default().max_len(10)).await;
    let by_node = channels_per_node(&cluster, "c:", "cap", 2);
    let trimmed: Vec<&Channel> = by_node.iter().map(|v| &v[0]).collect();
    let fresh: Vec<&Channel> = by_node.iter().map(|v| &v[1]).collect();
    let mut first = Vec::new();
    for c in &trimmed {
        first.push(append_n(&capped, c, 310).await);
    }
    let mut tail_positions = Vec::new();
    let mut expected: BTreeMap<Channel, (Vec<StreamId>, bool)> = BTreeMap::new();
    for (c, ids) in trimmed.iter().zip(&first) {
        let kept = held(&capped, c).await;
        assert!(kept.len() < 200, "{c} not trimmed: holds {}", kept.len());
        let oldest = kept[0];
        for cursor in [ids[0], ids[5], StreamId::ZERO] {
            let r = capped
                .replay(c, pos(&capped, c, cursor).await, 1000)
                .await
                .unwrap();
            let t = r
                .trimmed
                .as_ref()
                .unwrap_or_else(|| panic!("{c} after {cursor}: no trim signal"));
            assert_eq!(t.oldest, Some(oldest), "{c}");
            assert!(t.resume_from < oldest && t.resume_from >= cursor, "{c}: {t:?}");
            assert_eq!(r.entries.iter().map(|e| e.id).collect::<Vec<_>>(), kept, "{c}");
        }
        let r = capped
            .replay(c, pos(&capped, c, kept[3]).await, 1000)
            .await
            .unwrap();
        assert_eq!(r.trimmed, None, "{c}");
        assert_eq!(
            r.entries.iter().map(|e| e.id).collect::<Vec<_>>(),
            kept[4..],
            "{c}"
        );
        tail_positions.push(((*c).clone(), ids[2]));
        expected.insert((*c).clone(), (kept, true));
    }
    for c in &fresh {
        let ids = append_n(&capped, c, 4).await;
        tail_positions.push(((*c).clone(), ids[0]));
        expected.insert((*c).clone(), (ids[1..].to_vec(), false));
    }
    let batches = capped.tail(&at(&tail_positions), PROMPT, 1000).await.unwrap();
    let got: BTreeMap<Channel, (Vec<StreamId>, bool)> = batches
        .into_iter()
        .map(|b| (b.channel, (b.entries.iter().map(|e| e.id).collect(), b.gap)))
        .collect();
    assert_eq!(got, expected, "gap flags and entries per channel");
    drop(capped); // its subscriptions end with it

    // A tail returns promptly on an append to a channel of any master, and on a wake.
    let one_per_node: Vec<Channel> = channels_per_node(&cluster, "t:", "live", 1).concat();
    let mut live_positions = Vec::new();
    for c in &one_per_node {
        live_positions.push((c.clone(), store.position(c).await.unwrap().id));
    }
    let store = std::sync::Arc::new(store);
    notified_on_every_master(&store, &one_per_node, &mut live_positions, "").await;
    let waker = tokio::spawn({
        let store = store.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            store.wake().await.unwrap();
        }
    });
    let start = Instant::now();
    assert_eq!(store.tail(&at(&live_positions), LONG_WAIT, 10).await.unwrap(), []);
    assert!(start.elapsed() < PROMPT, "wake did not end the tail");
    waker.await.unwrap();

    // Subscriptions killed on every master: the node resubscribes, reads everything once, and
    // notifications work again.
    for i in 0..3 {
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query(&mut cluster.conn(i))
            .unwrap();
    }
    for (node, c) in one_per_node.iter().enumerate() {
        let id = store
            .append(c, "chat.message", "{}", AppendOptions::default())
            .await
            .unwrap()
            .id;
        let start = Instant::now();
        let batches = store.tail(&at(&live_positions), LONG_WAIT, 10).await.unwrap();
        assert!(
            start.elapsed() < PROMPT,
            "node {node} after resubscribe: {:?}",
            start.elapsed()
        );
        assert_eq!(batches.len(), 1, "node {node}: {batches:?}");
        assert_eq!(batches[0].entries[0].id, id);
        live_positions[node].1 = id;
    }
    wait_pubsub(&cluster, &[1, 1, 1], Duration::from_secs(5), "after CLIENT KILL").await;
    notified_on_every_master(&store, &one_per_node, &mut live_positions, " after resubscribing").await;

    // A TTL goes with every append, in the same MULTI on the key's own master.
    let ttl = open(
        &cluster.seeds(),
        "x:",
        Retention::default().ttl(Duration::from_secs(100)),
    )
    .await;
    for c in &one_per_node {
        ttl.append(c, "chat.message", "{}", AppendOptions::default())
            .await
            .unwrap();
        let key = format!("x:{c}");
        let pttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query(&mut cluster.conn(cluster.owner(&key)))
            .unwrap();
        assert!((90_000..=100_000).contains(&pttl), "{key}: PTTL {pttl}");
    }

    // One seed is enough, as redis+cluster:// or as a plain URL of a cluster node.
    for url in [
        format!("redis+cluster://127.0.0.1:{}", cluster.ports[1]),
        cluster.url(2),
    ] {
        let other = open(&url, "t:", Retention::default()).await;
        assert!(other.is_cluster(), "{url}");
        for (room, ids) in rooms.iter().zip(&appended) {
            assert_eq!(held(&other, room).await, *ids, "{url}: {room}");
        }
    }

    // Presence on channels of every master: one member table and presence stream per channel,
    // all in the channel's presence slot (the scripts touch four keys at once).
    let docs: Vec<Channel> = (0..9).map(|i| ch(&format!("doc:{i}"))).collect();
    let now = support::unix_now() * 1000;
    for doc in &docs {
        use tidings::store::{Joined, PresenceJoin};
        let info = |id: &str| format!(r#"{{"id":"{id}","sub":"{id}","name":null,"data":null}}"#);
        let (ada, bob) = (info("ada"), info("bob"));
        let (live, lapsed) = (now + 60_000, now - 1);
        let joined = store
            .presence_join(doc, PresenceJoin::new("ada", "n1:a1", &ada, live))
            .await;
        assert_eq!(joined.unwrap(), Joined::First);
        let joined = store
            .presence_join(doc, PresenceJoin::new("ada", "n1:a2", &ada, live))
            .await;
        assert_eq!(joined.unwrap(), Joined::Again);
        // Bob's connection has lapsed already: the sweep removes him, with his leave.
        let joined = store
            .presence_join(doc, PresenceJoin::new("bob", "n2:b1", &bob, lapsed))
            .await;
        assert_eq!(joined.unwrap(), Joined::First);
        assert_eq!(store.presence_members(doc).await.unwrap().len(), 3, "{doc}");
        assert_eq!(store.presence_sweep(doc, now).await.unwrap(), 1, "{doc}");
        assert!(
            !store.presence_leave(doc, "n1:a1").await.unwrap(),
            "ada has another connection"
        );
        assert!(store.presence_leave(doc, "n1:a2").await.unwrap(), "her last");
        let stream = store.history(&doc.presence(), Range::Latest, 10).await.unwrap();
        let events: Vec<&str> = stream.entries.iter().map(|e| &*e.event).collect();
        assert_eq!(
            events,
            [
                "presence.join",
                "presence.join",
                "presence.leave",
                "presence.leave"
            ],
            "{doc}"
        );
        assert!(stream.epoch.is_some(), "the presence stream has its epoch");
        assert!(store.presence_members(doc).await.unwrap().is_empty());
    }

    // XREAD tailing cannot span slots: refused with a clear error.
    let refused = RedisStore::connect(RedisOptions::new(cluster.seeds()).tail_mode(TailMode::Xread)).await;
    let err = refused.err().expect("xread on a cluster is refused").to_string();
    assert!(err.contains("XREAD") && err.contains("Cluster"), "{err}");

    println!("store on the cluster: {:.1} s", started.elapsed().as_secs_f64());
}

/// The pub/sub connections each node serves.
/// Pub/sub clients connected to node `i`.
fn pubsub_count(cluster: &Cluster, i: usize) -> usize {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut cluster.conn(i))
        .unwrap();
    list.lines().filter(|l| !l.trim().is_empty()).count()
}

fn pubsub_counts(cluster: &Cluster) -> Vec<usize> {
    (0..cluster.ports.len())
        .map(|i| pubsub_count(cluster, i))
        .collect()
}

async fn wait_pubsub(cluster: &Cluster, want: &[usize], within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    loop {
        let got = pubsub_counts(cluster);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: subscriptions per node {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// On a cluster with a replica: a store whose node holds one subscription per master (none on the
/// replica), one channel per master (named `base:…`) with one entry each, then checked live on
/// every master. Returns the store, the channels and their positions.
async fn live_on_every_master(
    cluster: &Cluster,
    base: &str,
    when: &str,
) -> (std::sync::Arc<RedisStore>, Vec<Channel>, Vec<(Channel, StreamId)>) {
    let store = std::sync::Arc::new(open(&cluster.seeds(), "t:", Retention::default()).await);
    wait_pubsub(cluster, &[1, 1, 1, 0], Duration::from_secs(2), when).await;
    let one_per_node: Vec<Channel> = channels_per_node(cluster, "t:", base, 1).concat();
    let mut positions = Vec::new();
    for c in &one_per_node {
        let id = store
            .append(c, "chat.message", "{}", AppendOptions::default())
            .await
            .unwrap()
            .id;
        positions.push((c.clone(), id));
    }
    notified_on_every_master(&store, &one_per_node, &mut positions, when).await;
    (store, one_per_node, positions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_follow_a_failover() {
    let started = Instant::now();
    let cluster = Cluster::start_with(true);
    println!(
        "cluster with a replica up in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let (store, one_per_node, mut positions) =
        live_on_every_master(&cluster, "fo", " before the failover").await;

    // The replica takes over node 0's slots. It never had notifications enabled (CONFIG SET is
    // not replicated): the node must find it, enable them there, subscribe, and drop the
    // subscription to the demoted master.
    let _: () = redis::cmd("CLUSTER")
        .arg("FAILOVER")
        .query(&mut cluster.conn(3))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(cluster.info(3, "replication").contains("role:master")
        && (0..4).all(|i| cluster.cluster_info(i).contains("cluster_state:ok")))
    {
        assert!(
            Instant::now() < deadline,
            "the failover did not happen: {:?}",
            (0..4)
                .map(|i| (cluster.info(i, "replication"), cluster.cluster_info(i)))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let failed_over = Instant::now();
    // The node looks at the masters every second: live events from the new master are at most
    // about that late.
    wait_pubsub(
        &cluster,
        &[0, 1, 1, 1],
        Duration::from_secs(3),
        "after the failover",
    )
    .await;
    println!(
        "subscribed to the new master {:.1} s after the failover",
        failed_over.elapsed().as_secs_f64()
    );
    let (_, flags): (String, String) = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query(&mut cluster.conn(3))
        .unwrap();
    assert!(
        flags.contains('K') && (flags.contains('t') || flags.contains('A')),
        "{flags:?}"
    );

    // Writes follow the slots to the new master, its notifications end tails promptly, and the
    // history written before the failover is all there.
    notified_on_every_master(&store, &one_per_node, &mut positions, " after the failover").await;
    for (c, last) in &positions {
        assert_eq!(store.position(c).await.unwrap().id, *last, "{c}");
        assert_eq!(held(&store, c).await.len(), 3, "{c}");
    }
    println!("failover: {:.1} s", started.elapsed().as_secs_f64());
}

/// A master dies without warning (SIGKILL) and the cluster promotes its replica by itself (after
/// `cluster-node-timeout`, 3 s here). Appends to the dead master's slots fail meanwhile (an error,
/// never a silent drop) and then succeed on the new master; the node subscribes to it, live tails
/// are prompt again on every master, and what was replicated before the crash is all there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unplanned_master_crash_is_survived() {
    let mut cluster = Cluster::start_with(true);
    let (store, one_per_node, mut positions) =
        live_on_every_master(&cluster, "crash", " before the crash").await;
    // Replication is asynchronous: what a crash may lose is Redis' business. Make sure the
    // replica has everything, so that the test can say exactly what must survive.
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(&mut cluster.conn(0))
        .unwrap();
    assert_eq!(acked, 1, "the replica did not acknowledge the writes");

    cluster.kill(0);
    let crashed = Instant::now();
    let c0 = &one_per_node[0];
    let mut failures = Vec::new();
    let id = loop {
        match store
            .append(c0, "chat.message", "{}", AppendOptions::default())
            .await
        {
            Ok(added) => break added.id,
            Err(e) => {
                assert!(
                    crashed.elapsed() < Duration::from_secs(30),
                    "no master for the dead node's slots 30 s after the crash; last error: {e}"
                );
                failures.push(e.to_string());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    println!(
        "appends to the dead master's slots failed {} times, then succeeded {:.1} s after the crash",
        failures.len(),
        crashed.elapsed().as_secs_f64()
    );
    assert!(cluster.info(3, "replication").contains("role:master"));
    positions[0].1 = id;
    // The node finds the promoted replica and subscribes to it within about a second.
    let deadline = Instant::now() + Duration::from_secs(3);
    while pubsub_count(&cluster, 3) == 0 {
        assert!(
            Instant::now() < deadline,
            "no subscription on the promoted replica"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    notified_on_every_master(&store, &one_per_node, &mut positions, " after the crash").await;
    // Before the crash: two entries per channel, replicated; after: one more on the dead
    // master's channel, and one per channel from the last check.
    for (node, (c, last)) in positions.iter().enumerate() {
        assert_eq!(store.position(c).await.unwrap().id, *last, "{c}");
        let want = if node == 0 { 4 } else { 3 };
        assert_eq!(held(&store, c).await.len(), want, "{c}");
    }
}

// ---------------------------------------------------------------------------------------------
// tidings processes on the cluster
// ---------------------------------------------------------------------------------------------

/// One `tidings` process, SIGKILLed on drop (also when the test panics, printing its log).
type Node = Binary;

/// Starts the binary on a free port with `--redis <seeds>` and waits until `/health` answers.
async fn start(seeds: &str) -> Node {
    Spawn::new()
        .redis(seeds)
        .args(&["--heartbeat", "1"])
        .start()
        .await
}

async fn emit(node: &Node, channel: &str, text: &str) -> String {
    let r = reqwest::Client::new()
        .post(node.url("/emit"))
        .bearer_auth(EMIT_KEY)
        .json(&serde_json::json!({ "channel": channel, "event": "chat.message", "data": msg(text) }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "emit to {channel}");
    let body: Value = r.json().await.unwrap();
    body["id"].as_str().unwrap().to_string()
}

/// Reads `n` chat messages (skipping `tidings.ready`), as `(channel, text)`, and the cursor of
/// the last one.
async fn read_messages(sse: &mut SseReader, n: usize, who: &str) -> (Vec<(String, String)>, String) {
    let mut got = Vec::new();
    let mut cursor = String::new();
    while got.len() < n {
        let frame = sse
            .next()
            .await
            .unwrap_or_else(|| panic!("{who}: stream ended after {got:?}"));
        if frame.event.as_deref() == Some("tidings.ready") || frame.event.is_none() && frame.retry.is_some() {
            continue;
        }
        assert_eq!(frame.event.as_deref(), Some("chat.message"), "{who}: {frame:?}");
        let data = frame.json();
        got.push((
            data["channel"].as_str().unwrap().to_string(),
            data["data"]["text"].as_str().unwrap().to_string(),
        ));
        cursor = frame.id.clone().unwrap();
    }
    (got, cursor)
}

/// Asserts nothing but heartbeats arrives for `quiet`.
async fn assert_quiet(sse: &mut SseReader, quiet: Duration, who: &str) {
    if let Ok(frame) = tokio::time::timeout(quiet, sse.next()).await {
        panic!("{who}: unexpected frame {frame:?}");
    }
}

fn per_channel(msgs: &[(String, String)]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (c, t) in msgs {
        out.entry(c.clone()).or_default().push(t.clone());
    }
    out
}

fn texts(channels: &[String], rounds: std::ops::RangeInclusive<usize>) -> BTreeMap<String, Vec<String>> {
    channels
        .iter()
        .map(|c| (c.clone(), rounds.clone().map(|r| format!("{c}#{r}")).collect()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_fan_out_and_resume_across_the_cluster() {
    let started = Instant::now();
    let cluster = Cluster::start();
    let seeds = cluster.seeds();
    let (mut a, b) = (start(&seeds).await, start(&seeds).await);
    // Two channels per master, so the events live in six slots on three nodes.
    let channels: Vec<String> = channels_per_node(&cluster, "tidings:", "ord", 2)
        .concat()
        .iter()
        .map(|c| c.to_string())
        .collect();
    let owners: HashSet<usize> = channels
        .iter()
        .map(|c| cluster.owner(&format!("tidings:{c}")))
        .collect();
    assert_eq!(owners.len(), 3);

    let mut on_b = SseReader::open(&b.realtime(&channels), None).await;
    on_b.until("tidings.ready").await;
    let mut on_a = SseReader::open(&a.realtime(&channels), None).await;
    on_a.until("tidings.ready").await;

    // Five rounds over the six channels, emitted through A.
    for round in 1..=5 {
        for c in &channels {
            emit(&a, c, &format!("{c}#{round}")).await;
        }
    }
    let (got, _) = read_messages(&mut on_b, 30, "subscriber on B").await;
    assert_eq!(
        per_channel(&got),
        texts(&channels, 1..=5),
        "B: each once, in order"
    );
    assert_quiet(&mut on_b, Duration::from_millis(1500), "subscriber on B").await;

    // The client of A has read half, then A dies. It resumes on B from its last id.
    let (first_half, cursor) = read_messages(&mut on_a, 15, "subscriber on A").await;
    a.kill();
    drop(on_a);
    for round in 6..=7 {
        for c in &channels {
            emit(&b, c, &format!("{c}#{round}")).await;
        }
    }
    let mut resumed = SseReader::open(&b.realtime(&channels), Some(&cursor)).await;
    let (rest, _) = read_messages(&mut resumed, 15 + 12, "resumed on B").await;
    for round in [8] {
        for c in &channels {
            emit(&b, c, &format!("{c}#{round}")).await;
        }
    }
    let (live, _) = read_messages(&mut resumed, 6, "resumed on B, live").await;
    let all: Vec<(String, String)> = first_half.into_iter().chain(rest).chain(live).collect();
    assert_eq!(
        per_channel(&all),
        texts(&channels, 1..=8),
        "nothing lost, nothing twice"
    );
    assert_quiet(&mut resumed, Duration::from_millis(1000), "resumed on B").await;
    // The subscriber that stayed on B saw rounds 6 to 8 too.
    let (later, _) = read_messages(&mut on_b, 18, "subscriber on B").await;
    assert_eq!(per_channel(&later), texts(&channels, 6..=8));

    for (name, node) in [("A", &a), ("B", &b)] {
        let text = node.log();
        for bad in ["CROSSSLOT", "tailing the store failed", "ERROR"] {
            assert!(!text.contains(bad), "node {name} logged {bad}:\n{text}");
        }
    }
    println!(
        "two nodes on the cluster: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------------

/// The local TCP ports of process `pid`'s sockets (from `/proc`).
fn local_ports(pid: u32) -> HashSet<u16> {
    let mut inodes = HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            let t = target.to_string_lossy();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                inodes.insert(inode.to_string());
            }
        }
    }
    let mut ports = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 9 && inodes.contains(fields[9]) {
                if let Some((_, port)) = fields[1].rsplit_once(':') {
                    ports.insert(u16::from_str_radix(port, 16).unwrap());
                }
            }
        }
    }
    ports
}

/// For each tidings process, its connections to each cluster node (from `CLIENT LIST`).
fn connection_table(cluster: &Cluster, nodes: &[&Node]) -> Vec<Vec<usize>> {
    let ports: Vec<HashSet<u16>> = nodes.iter().map(|n| local_ports(n.pid())).collect();
    // The client ports each cluster node lists.
    let clients: Vec<Vec<u16>> = (0..3)
        .map(|i| {
            let list: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query(&mut cluster.conn(i))
                .unwrap();
            list.lines()
                .filter_map(|line| {
                    line.split(' ')
                        .find_map(|f| f.strip_prefix("addr="))
                        .and_then(|a| a.rsplit_once(':'))
                        .and_then(|(_, p)| p.parse::<u16>().ok())
                })
                .collect()
        })
        .collect();
    ports
        .iter()
        .map(|mine| {
            clients
                .iter()
                .map(|listed| listed.iter().filter(|p| mine.contains(p)).count())
                .collect()
        })
        .collect()
}

/// The table sampled three times 150 ms apart: it must not move.
async fn steady_table(cluster: &Cluster, nodes: &[&Node], when: &str) -> Vec<Vec<usize>> {
    let mut samples = Vec::new();
    for i in 0..3 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        samples.push(connection_table(cluster, nodes));
    }
    println!(
        "{when}: connections [tidings node][cluster node] = {:?}",
        samples[2]
    );
    assert!(
        samples.iter().all(|s| *s == samples[0]),
        "{when}: connections changed while nothing happened: {samples:?}"
    );
    samples.pop().unwrap()
}

/// Opens `clients` SSE connections on `node`: client 0 watches all `channels`, client `i` the
/// channel `i % channels`. Each is read up to `tidings.ready`.
async fn open_clients(
    node: &Node,
    prefix: &str,
    clients: usize,
    channels: usize,
) -> Vec<(Vec<String>, SseReader)> {
    let mut out = Vec::new();
    let indices: Vec<usize> = (0..clients).collect();
    for batch in indices.chunks(25) {
        out.extend(
            join_all(batch.iter().map(|&i| async move {
                let names: Vec<String> = if i == 0 {
                    (0..channels).map(|c| format!("{prefix}:{c}")).collect()
                } else {
                    vec![format!("{prefix}:{}", i % channels)]
                };
                let mut sse = SseReader::open(&node.realtime(&names), None).await;
                sse.until("tidings.ready").await;
                (names, sse)
            }))
            .await,
        );
    }
    out
}

/// Emits one event per channel through `node` and checks every client gets those of its channels.
async fn emit_and_receive(
    node: &Node,
    prefix: &str,
    channels: usize,
    clients: &mut [(Vec<String>, SseReader)],
) {
    for c in 0..channels {
        let name = format!("{prefix}:{c}");
        emit(node, &name, &format!("{name}#1")).await;
    }
    join_all(clients.iter_mut().map(|(names, sse)| async move {
        let (got, _) = read_messages(sse, names.len(), "client").await;
        assert_eq!(per_channel(&got), texts(names, 1..=1));
    }))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_depend_on_masters_not_on_clients_or_channels() {
    let started = Instant::now();
    let cluster = Cluster::start();
    let seeds = cluster.seeds();
    let (a, b) = (start(&seeds).await, start(&seeds).await);
    let nodes = [&a, &b];
    let idle = steady_table(&cluster, &nodes, "no client").await;

    let mut tables = Vec::new();
    for (clients, channels) in [(1usize, 1usize), (100, 100)] {
        let prefix = format!("c{clients}");
        let mut on_a = open_clients(&a, &format!("{prefix}a"), clients, channels).await;
        let mut on_b = open_clients(&b, &format!("{prefix}b"), clients, channels).await;
        emit_and_receive(&a, &format!("{prefix}a"), channels, &mut on_a).await;
        emit_and_receive(&b, &format!("{prefix}b"), channels, &mut on_b).await;
        tables.push(
            steady_table(
                &cluster,
                &nodes,
                &format!("{clients} clients on {channels} channels per tidings node"),
            )
            .await,
        );
    }
    assert_eq!(tables[0], tables[1], "connections grew with clients or channels");
    assert_eq!(idle, tables[0], "connections differ between idle and busy");
    for (n, row) in tables[0].iter().enumerate() {
        for (i, &count) in row.iter().enumerate() {
            assert_eq!(
                count, PER_MASTER,
                "tidings node {n} holds {count} connections to master {i}; expected {PER_MASTER} (commands + subscription)"
            );
        }
    }
    println!(
        "connections on the cluster: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
