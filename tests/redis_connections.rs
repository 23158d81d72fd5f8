//! A node holds a fixed number of Redis connections, however many SSE clients it serves and
//! however many channels they watch: measured with `CLIENT LIST` on a real redis-server against
//! the real `tidings` binary, with 1, 50 and 200 clients over 1, 50 and 200 channels, and again
//! after every client has gone (no leak).
//!
//! Each test runs twice: on a stock redis-server (the node picks its tail mechanism; keyspace
//! notifications when it can turn them on) and on one without `CONFIG` (as managed Redis services
//! often are), where the node cannot and tails with blocking `XREAD`. The assertions do not depend
//! on the mechanism.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use support::{msg, Binary, RedisServer, Spawn, SseReader, EMIT_KEY};

/// The name this test gives its own Redis connections, so `CLIENT LIST` can leave them out.
const PROBE: &str = "tidings-test-probe";
/// The most connections one node may hold (two today: writes and history, and the tail).
const BOUND: usize = 3;

/// One `tidings` server process, SIGKILLed on drop (its log printed when the test panics).
type Node = Binary;

/// Starts the binary on a free port against `redis` and waits until `/health` answers.
async fn start(redis: &RedisServer, extra: &[&str]) -> Node {
    Spawn::new().redis(&redis.url()).args(extra).start().await
}

/// Polls `/health` until `field` equals `want`; false when it does not within `within`.
async fn wait_health(node: &Node, field: &str, want: u64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if node.health().await[field] == want {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every client of the test Redis but this test's own probes.
fn node_connections(redis: &RedisServer) -> Vec<String> {
    support::other_clients(redis, PROBE)
}

/// The fields of a `CLIENT LIST` line worth printing.
fn summary(line: &str) -> String {
    line.split(' ')
        .filter(|f| ["id=", "age=", "flags=", "cmd="].iter().any(|k| f.starts_with(k)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The node's connection count, sampled three times 150 ms apart: it must not move.
async fn steady_count(redis: &RedisServer, when: &str) -> usize {
    let mut samples = Vec::new();
    let mut last = Vec::new();
    for i in 0..3 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        last = node_connections(redis);
        samples.push(last.len());
    }
    let details: Vec<String> = last.iter().map(|l| summary(l)).collect();
    println!("{when}: {} Redis connections {details:?}", samples[2]);
    assert!(
        samples.iter().all(|&n| n == samples[0]),
        "{when}: the node's Redis connections changed while nothing happened: {samples:?}"
    );
    samples[0]
}

/// The channels SSE connection `i` of `clients` watches out of `channels`: connection 0 watches
/// as many as one connection may (100), the others one channel each, odd ones a second one.
fn watched(i: usize, channels: usize) -> Vec<usize> {
    if i == 0 {
        return (0..channels.min(100)).collect();
    }
    let mut out = vec![i % channels];
    let second = (i + channels / 2) % channels;
    if i % 2 == 1 && second != out[0] {
        out.push(second);
    }
    out
}

struct Client {
    channels: Vec<String>,
    sse: SseReader,
}

/// Opens `clients` SSE connections over `channels` channels named `<prefix>:<n>`, 25 at a time,
/// each read up to `tidings.ready`.
async fn open_clients(node: &Node, prefix: &str, clients: usize, channels: usize) -> Vec<Client> {
    let mut out = Vec::with_capacity(clients);
    let indices: Vec<usize> = (0..clients).collect();
    for batch in indices.chunks(25) {
        let opened = join_all(batch.iter().map(|&i| async move {
            let names: Vec<String> = watched(i, channels)
                .into_iter()
                .map(|c| format!("{prefix}:{c}"))
                .collect();
            let query: Vec<String> = names.iter().map(|n| format!("channel={n}")).collect();
            let mut sse = SseReader::open(&node.url(&format!("/realtime?{}", query.join("&"))), None).await;
            sse.until("tidings.ready").await;
            Client { channels: names, sse }
        }))
        .await;
        out.extend(opened);
    }
    out
}

/// Emits two events to every channel of the case and checks that each client receives exactly
/// the events of its channels, in order per channel.
async fn emit_and_receive(node: &Node, prefix: &str, channels: usize, clients: &mut [Client]) {
    let http = reqwest::Client::new();
    for round in 1..=2 {
        for c in 0..channels {
            let channel = format!("{prefix}:{c}");
            let r = http
                .post(node.url("/emit"))
                .bearer_auth(EMIT_KEY)
                .json(&serde_json::json!({
                    "channel": channel,
                    "event": "chat.message",
                    "data": msg(&format!("{channel}#{round}")),
                }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "emit to {channel}");
        }
    }
    join_all(clients.iter_mut().enumerate().map(|(i, client)| async move {
        let want: BTreeMap<String, Vec<String>> = client
            .channels
            .iter()
            .map(|c| (c.clone(), vec![format!("{c}#1"), format!("{c}#2")]))
            .collect();
        let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for _ in 0..2 * client.channels.len() {
            let frame = client
                .sse
                .next()
                .await
                .unwrap_or_else(|| panic!("client {i}: stream ended; got {got:?}"));
            assert_eq!(
                frame.event.as_deref(),
                Some("chat.message"),
                "client {i}: {frame:?}"
            );
            let data = frame.json();
            got.entry(data["channel"].as_str().unwrap().to_string())
                .or_default()
                .push(data["data"]["text"].as_str().unwrap().to_string());
        }
        assert_eq!(got, want, "client {i}");
    }))
    .await;
}

/// A redis-server as managed services often run it: without `CONFIG`.
fn redis_without_config() -> RedisServer {
    RedisServer::start_with(&["--rename-command", "CONFIG", ""])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_holds_a_constant_number_of_redis_connections() {
    constant_connections("stock redis", RedisServer::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_holds_a_constant_number_of_redis_connections_without_config() {
    constant_connections("redis without CONFIG", redis_without_config()).await;
}

async fn constant_connections(label: &str, redis: RedisServer) {
    let started = Instant::now();
    // A short heartbeat so the node notices closed clients quickly.
    let node = start(&redis, &["--heartbeat", "1"]).await;
    let idle = steady_count(&redis, &format!("{label}: node started, no client")).await;

    let mut counts = Vec::new();
    for (case, (clients, channels)) in [(1usize, 1usize), (50, 50), (200, 200)].into_iter().enumerate() {
        let prefix = format!("case{case}");
        let mut open = open_clients(&node, &prefix, clients, channels).await;
        let health = node.health().await;
        assert_eq!(health["subscribers"], clients as u64, "{health}");
        assert_eq!(health["channels_watched"], channels as u64, "{health}");
        emit_and_receive(&node, &prefix, channels, &mut open).await;
        let n = steady_count(
            &redis,
            &format!("{label}: {clients} clients on {channels} channels"),
        )
        .await;
        counts.push(n);

        drop(open);
        assert!(
            wait_health(&node, "subscribers", 0, Duration::from_secs(10)).await,
            "the node still counts subscribers after every client left: {}",
            node.health().await
        );
        let after = steady_count(&redis, &format!("{label}: after the {clients} clients left")).await;
        assert_eq!(after, n, "connections after the {clients} clients left");
    }

    // Once the node has also let go of every channel (the tail forgets unwatched channels on its
    // next round), the count is still the same.
    let forgot = wait_health(&node, "channels_watched", 0, Duration::from_secs(8)).await;
    let last = steady_count(
        &redis,
        &format!("{label}: all clients gone (channels forgotten: {forgot})"),
    )
    .await;

    println!(
        "{label}: Redis connections of one node: idle {idle}, with 1/50/200 clients {counts:?}, after all left {last} ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    assert!(
        counts.iter().all(|&n| n == counts[0]),
        "the node's Redis connections grew with clients or channels: {counts:?}"
    );
    assert!(counts[0] >= 1, "the node holds no Redis connection at all?");
    assert!(
        counts[0] <= BOUND,
        "a node holds {} Redis connections, more than {BOUND}",
        counts[0]
    );
    assert!(idle <= counts[0], "idle {idle} > busy {}", counts[0]);
    assert_eq!(
        last, counts[0],
        "connections leaked or dropped after all clients left"
    );
}
