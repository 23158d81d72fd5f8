//! Several real `tidings` processes on one Redis: an emit through any node reaches the
//! subscribers of every node, once and in order; a client whose node is SIGKILLed resumes on
//! another node with its last `id:` and gets exactly what it missed, then live events; and idle
//! channels do not slow down a busy one.
//!
//! Each test runs on a stock redis-server (the nodes pick their tail mechanism; keyspace
//! notifications when they can turn them on) and on one without `CONFIG` (as managed Redis
//! services often are), where they cannot and tail with blocking `XREAD`. The assertions do not
//! depend on the mechanism.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use serde_json::Value;
use support::{by_id, msg, Binary, Ev, Frame, RedisServer, Spawn, SseReader, EMIT_KEY};
use tidings::StreamId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The tests of this file run one at a time: the latency test must not share two cores with
/// the others.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A redis-server as managed services often run it: without `CONFIG`.
fn redis_without_config() -> RedisServer {
    RedisServer::start_with(&["--rename-command", "CONFIG", ""])
}

/// One `tidings` server process, SIGKILLed on drop (its log printed when the test panics).
type Node = Binary;

/// Starts the binary on a free port against `redis` and waits until `/health` answers.
async fn start(name: &'static str, redis: &RedisServer) -> Node {
    Spawn::new().redis(&redis.url()).name(name).start().await
}

/// Emits through one node's `POST /emit` on a keep-alive connection.
#[derive(Clone)]
struct Emitter {
    http: reqwest::Client,
    url: String,
}

impl Emitter {
    fn new(node: &Node) -> Emitter {
        Emitter {
            http: reqwest::Client::new(),
            url: node.url("/emit"),
        }
    }

    async fn emit(&self, channel: &str, event: &str, data: Value) -> StreamId {
        let r = self
            .http
            .post(&self.url)
            .bearer_auth(EMIT_KEY)
            .json(&serde_json::json!({ "channel": channel, "event": event, "data": data }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "emit to {channel} through {}", self.url);
        let body: Value = r.json().await.unwrap();
        body["id"].as_str().unwrap().parse().unwrap()
    }

    /// A chat.message with `text`, logged as an [`Ev`].
    async fn message(&self, channel: &str, text: String) -> Ev {
        let id = self.emit(channel, "chat.message", msg(&text)).await;
        Ev {
            channel: channel.to_string(),
            id,
            text,
        }
    }
}

/// The event of a chat.message frame, checking that the frame's `id:` cursor has the event's
/// id for its channel.
fn ev(frame: &Frame) -> Ev {
    assert_eq!(frame.event.as_deref(), Some("chat.message"), "{frame:?}");
    support::ev(frame)
}

/// `events` per channel, in emit order, for the channels in `channels`.
fn per_channel(events: &[Ev], channels: &[&str]) -> BTreeMap<String, Vec<Ev>> {
    let mut out: BTreeMap<String, Vec<Ev>> = channels.iter().map(|c| (c.to_string(), Vec::new())).collect();
    for e in events {
        if let Some(list) = out.get_mut(&e.channel) {
            list.push(e.clone());
        }
    }
    out
}

/// Fails if a frame (or the end of the stream) arrives within `quiet`.
async fn assert_quiet(sse: &mut SseReader, quiet: Duration, who: &str) {
    if let Ok(next) = tokio::time::timeout(quiet, sse.next()).await {
        panic!("{who}: expected nothing more, got {next:?}");
    }
}

/// Polls until `cond` holds, panicking with `what` after `within`.
async fn wait_for(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

// (a) ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emit_through_one_node_reaches_every_node_once_in_order() {
    fan_out_across_nodes("stock redis", RedisServer::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emit_through_one_node_reaches_every_node_once_in_order_without_config() {
    fan_out_across_nodes("redis without CONFIG", redis_without_config()).await;
}

async fn fan_out_across_nodes(label: &str, redis: RedisServer) {
    let _serial = SERIAL.lock().await;
    const ROOMS: [&str; 3] = ["fan:1", "fan:2", "fan:3"];
    let a = start("A", &redis).await;
    let b = start("B", &redis).await;
    let c = start("C", &redis).await;

    // On every node: one connection on all rooms, and one per room.
    let mut subs: Vec<(String, Vec<&str>, SseReader)> = Vec::new();
    for node in [&a, &b, &c] {
        let mut sets: Vec<Vec<&str>> = vec![ROOMS.to_vec()];
        sets.extend(ROOMS.iter().map(|r| vec![*r]));
        for set in sets {
            let mut sse = SseReader::open(&node.realtime(&set), None).await;
            sse.until("tidings.ready").await;
            subs.push((format!("node {} on {set:?}", node.name), set, sse));
        }
    }

    // Emitted through A only; the last event of each room is its end marker.
    let emitter = Emitter::new(&a);
    let mut log = Vec::new();
    for n in 0..45 {
        let room = ROOMS[(n * 7 / 3) % 3];
        log.push(emitter.message(room, format!("{room}#{n}")).await);
    }
    for room in ROOMS {
        log.push(emitter.message(room, format!("{room}#end")).await);
    }

    let log = &log;
    join_all(subs.iter_mut().map(|(who, rooms, sse)| async move {
        let mut got = per_channel(&[], rooms);
        let mut ended = HashSet::new();
        while ended.len() < rooms.len() {
            let frame = sse
                .next()
                .await
                .unwrap_or_else(|| panic!("{who}: stream ended; got {got:?}"));
            let e = ev(&frame);
            if e.text.ends_with("#end") {
                assert!(
                    ended.insert(e.channel.clone()),
                    "{who}: end of {} twice",
                    e.channel
                );
            }
            got.get_mut(&e.channel)
                .unwrap_or_else(|| panic!("{who}: an event of a channel not watched: {e:?}"))
                .push(e);
        }
        assert_eq!(got, per_channel(log, rooms), "{who}: in order, exactly once");
        assert_quiet(sse, Duration::from_millis(300), who).await;
    }))
    .await;
    println!(
        "{label}: {} events through node A received by {} subscribers on nodes A, B and C",
        log.len(),
        subs.len()
    );
}

// (b) ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_a_killed_node_resumes_on_another_node() {
    resume_after_sigkill("stock redis", RedisServer::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_a_killed_node_resumes_on_another_node_without_config() {
    resume_after_sigkill("redis without CONFIG", redis_without_config()).await;
}

async fn resume_after_sigkill(label: &str, redis: RedisServer) {
    let _serial = SERIAL.lock().await;
    const ROOMS: [&str; 3] = ["kill:a", "kill:b", "kill:c"];
    let mut a = start("A", &redis).await;
    let b = start("B", &redis).await;

    let mut client = SseReader::open(&a.realtime(&ROOMS), None).await;
    client.until("tidings.ready").await;
    let mut watcher = SseReader::open(&b.realtime(&ROOMS), None).await;
    watcher.until("tidings.ready").await;

    // Emits through B at a steady pace until told to stop, logging what was stored.
    let log: Arc<Mutex<Vec<Ev>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let emitting = tokio::spawn({
        let (log, stop, emitter) = (log.clone(), stop.clone(), Emitter::new(&b));
        async move {
            let mut n = 0;
            while !stop.load(Ordering::Acquire) {
                let room = ROOMS[n % 3];
                let e = emitter.message(room, format!("{room}#{n}")).await;
                log.lock().unwrap().push(e);
                n += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    let emitted = || log.lock().unwrap().len();

    // The client reads on A; A is killed; every frame that reached the client before its stream
    // ended counts as received, as it would for a browser.
    let mut received = Vec::new();
    let mut last_id = String::new();
    for _ in 0..15 {
        let frame = client.next().await.expect("live on A");
        last_id = frame.id.clone().unwrap();
        received.push(ev(&frame));
    }
    a.kill();
    while let Some(frame) = client.next().await {
        last_id = frame.id.clone().unwrap();
        received.push(ev(&frame));
    }
    let at_kill = emitted();
    let before_kill = received.len();

    // Events keep coming through B while the client is away.
    // (One emit may have been stored, and even received, before it was logged: hence 11.)
    wait_for(Duration::from_secs(20), "eleven emits after the kill", || {
        emitted() >= at_kill + 11
    })
    .await;
    let mut client = SseReader::open(&b.realtime(&ROOMS), Some(&last_id)).await;
    let frames = client.until("tidings.ready").await;
    assert_eq!(frames[0].retry.as_deref(), Some("2000"));
    let (ready, replayed) = frames[1..].split_last().unwrap();
    let replayed: Vec<Ev> = replayed.iter().map(ev).collect();
    assert!(
        replayed.len() >= 10,
        "the events emitted while the client was away are replayed: {replayed:?}"
    );
    received.extend(replayed.iter().cloned());

    // Then live: 20 more, while the emitter still runs; then it stops and the rest arrives.
    let live_from = received.len();
    for _ in 0..20 {
        received.push(ev(&client.next().await.expect("live on B")));
    }
    stop.store(true, Ordering::Release);
    emitting.await.unwrap();
    let log = log.lock().unwrap().clone();
    while received.len() < log.len() {
        received.push(ev(&client.next().await.expect("live on B")));
    }

    let ids: HashSet<(String, StreamId)> = received.iter().map(|e| (e.channel.clone(), e.id)).collect();
    assert_eq!(ids.len(), received.len(), "nothing repeated");
    assert_eq!(
        per_channel(&received, &ROOMS),
        per_channel(&log, &ROOMS),
        "nothing lost, nothing repeated, in order"
    );
    let expected_ready: Vec<String> = ROOMS
        .iter()
        .map(|r| {
            let last = received[..live_from].iter().rev().find(|e| e.channel == *r);
            format!("{r}={}", last.map_or(StreamId::ZERO, |e| e.id))
        })
        .collect();
    assert_eq!(ready.id.as_deref().map(by_id), Some(expected_ready.join(",")));
    assert_quiet(&mut client, Duration::from_millis(300), "resumed client").await;

    // The watcher on B saw the whole log live, once.
    let mut seen = Vec::new();
    while seen.len() < log.len() {
        seen.push(ev(&watcher.next().await.expect("watcher on B")));
    }
    assert_eq!(
        per_channel(&seen, &ROOMS),
        per_channel(&log, &ROOMS),
        "watcher on B"
    );
    assert_quiet(&mut watcher, Duration::from_millis(100), "watcher on B").await;
    println!(
        "{label}: {} events: {before_kill} on A before SIGKILL, {} replayed on B, {} live on B",
        log.len(),
        replayed.len(),
        log.len() - live_from
    );
}

// (c) ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_channels_do_not_delay_a_busy_one() {
    idle_channels_and_a_busy_one("stock redis", RedisServer::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_channels_do_not_delay_a_busy_one_without_config() {
    idle_channels_and_a_busy_one("redis without CONFIG", redis_without_config()).await;
}

/// Idle subscribers on their own channels.
const IDLE: usize = 500;
/// Events to the busy channel, and their pace.
const BUSY_EVENTS: usize = 200;
const BUSY_EVERY: Duration = Duration::from_millis(10);
/// Emit-to-receipt p99 allowed on a shared two-core machine.
const P99_BOUND_MS: f64 = 250.0;

/// A bare SSE subscriber: sends the request and reads up to `tidings.ready`, then stays idle.
async fn idle_subscriber(addr: &str, channel: &str) -> tokio::net::TcpStream {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /realtime?channel={channel} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("event: tidings.ready") {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
            .await
            .expect("tidings.ready within 10 s")
            .unwrap();
        assert!(
            n > 0,
            "{channel}: stream ended: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(
        seen.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    conn
}

async fn idle_channels_and_a_busy_one(label: &str, redis: RedisServer) {
    let _serial = SERIAL.lock().await;
    let a = start("A", &redis).await;
    let b = start("B", &redis).await;

    let channels: Vec<String> = (0..IDLE).map(|i| format!("idle:{i}")).collect();
    let mut idle = Vec::with_capacity(IDLE);
    for batch in channels.chunks(50) {
        idle.extend(join_all(batch.iter().map(|c| idle_subscriber(&b.addr, c))).await);
    }
    let mut busy = SseReader::open(&b.realtime(&["busy"]), None).await;
    busy.until("tidings.ready").await;
    let health = b.health().await;
    assert_eq!(health["subscribers"], (IDLE + 1) as u64, "{health}");
    assert_eq!(health["channels_watched"], (IDLE + 1) as u64, "{health}");

    // Receipt times are taken as frames arrive, by a task of their own.
    let receiving = tokio::spawn(async move {
        let mut got = Vec::with_capacity(BUSY_EVENTS + 5);
        for _ in 0..BUSY_EVENTS + 5 {
            let frame = busy.next().await.expect("busy stream open");
            let at = now_ns();
            assert_eq!(frame.event.as_deref(), Some("notification.alert"), "{frame:?}");
            let text = frame.json()["data"].as_str().unwrap().to_string();
            let (seq, sent) = text.split_once(' ').unwrap();
            let (seq, sent): (i64, u64) = (seq.parse().unwrap(), sent.parse().unwrap());
            got.push((seq, at.saturating_sub(sent)));
        }
        (got, busy)
    });

    // Five warm-up events, then a steady pace from A; each payload carries its send time.
    let emitter = Emitter::new(&a);
    for seq in -5..0i64 {
        emitter
            .emit(
                "busy",
                "notification.alert",
                Value::from(format!("{seq} {}", now_ns())),
            )
            .await;
    }
    let started = Instant::now();
    let mut tick = tokio::time::interval(BUSY_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for seq in 0..BUSY_EVENTS as i64 {
        tick.tick().await;
        emitter
            .emit(
                "busy",
                "notification.alert",
                Value::from(format!("{seq} {}", now_ns())),
            )
            .await;
    }
    let emit_secs = started.elapsed().as_secs_f64();
    let (got, mut busy) = tokio::time::timeout(Duration::from_secs(30), receiving)
        .await
        .expect("every busy event within 30 s")
        .unwrap();

    let seqs: Vec<i64> = got.iter().map(|(s, _)| *s).collect();
    let want: Vec<i64> = (-5..BUSY_EVENTS as i64).collect();
    assert_eq!(seqs, want, "busy events in order, exactly once");
    assert_quiet(&mut busy, Duration::from_millis(200), "busy subscriber").await;

    let mut latencies: Vec<f64> = got[5..].iter().map(|(_, ns)| *ns as f64 / 1e6).collect();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    let (p50, p99, max) = (pct(0.50), pct(0.99), pct(1.0));
    println!(
        "{label}: busy channel beside {IDLE} idle ones: {BUSY_EVENTS} events in {emit_secs:.2} s, emit-to-receipt p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms"
    );
    assert!(
        p99 < P99_BOUND_MS,
        "{label}: emit-to-receipt p99 {p99:.1} ms (p50 {p50:.1} ms) beside {IDLE} idle channels; bound {P99_BOUND_MS} ms"
    );
    // The idle subscribers were still connected all along.
    let health = b.health().await;
    assert_eq!(health["subscribers"], (IDLE + 1) as u64, "{health}");
    drop(idle);
}
