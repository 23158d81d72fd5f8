//! The real `tidings` binary on Redis: a process is killed (SIGKILL) and another takes over the
//! same Redis; clients resume from their last seen id and get exactly what they missed,
//! including events emitted through another process while theirs was down.

mod support;

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;
use support::{by_id, ev, msg, Binary, Ev, RedisServer, Spawn, SseReader, EMIT_KEY};
use tidings::{Channel, Cursor, StreamId};

const ROOMS: [&str; 3] = ["room:a", "room:b", "room:c"];

/// One `tidings` server process, SIGKILLed on drop.
type Node = Binary;

/// Starts the binary on a free port against `redis` and waits until `/health` answers.
async fn start(redis: &RedisServer) -> Node {
    Spawn::new()
        .redis(&redis.url())
        .log("tidings=debug,warn")
        .start()
        .await
}

/// Emits through one node's HTTP API and keeps a log of what was stored.
#[derive(Default)]
struct Log {
    events: Vec<Ev>,
    n: usize,
}

impl Log {
    async fn emit(&mut self, node: &Node, channel: &str) -> Ev {
        self.n += 1;
        let text = format!("{channel}#{}", self.n);
        let r = reqwest::Client::new()
            .post(node.url("/emit"))
            .bearer_auth(EMIT_KEY)
            .json(&serde_json::json!({ "channel": channel, "event": "chat.message", "data": msg(&text) }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        let e = Ev {
            channel: channel.to_string(),
            id: body["id"].as_str().unwrap().parse().unwrap(),
            text,
        };
        self.events.push(e.clone());
        e
    }

    /// Per channel, in order, everything logged after `cursor`.
    fn after(&self, cursor: &str) -> BTreeMap<String, Vec<Ev>> {
        let cursor = Cursor::parse(cursor).unwrap();
        let mut out: BTreeMap<String, Vec<Ev>> = ROOMS.iter().map(|r| (r.to_string(), Vec::new())).collect();
        for e in &self.events {
            let pos = cursor
                .get(&Channel::new(&e.channel).unwrap())
                .map_or(StreamId::ZERO, |p| p.id);
            if e.id > pos {
                out.get_mut(&e.channel).unwrap().push(e.clone());
            }
        }
        out
    }
}

/// Reads a resumed stream up to `tidings.ready`: the replayed events, per channel, checked for
/// duplicates and id order, and the ready frame's cursor.
async fn replay(sse: &mut SseReader) -> (BTreeMap<String, Vec<Ev>>, String) {
    let frames = sse.until("tidings.ready").await;
    assert_eq!(frames[0].retry.as_deref(), Some("2000"));
    let (ready, middle) = frames[1..].split_last().unwrap();
    let mut out: BTreeMap<String, Vec<Ev>> = ROOMS.iter().map(|r| (r.to_string(), Vec::new())).collect();
    let mut seen = HashSet::new();
    let mut last = StreamId::ZERO;
    for f in middle {
        assert_eq!(
            f.event.as_deref(),
            Some("chat.message"),
            "only events before ready: {f:?}"
        );
        let e = ev(f);
        assert!(seen.insert(e.id.to_string() + &e.channel), "duplicate {e:?}");
        assert!(e.id >= last, "replay out of id order at {e:?}");
        last = e.id;
        out.get_mut(&e.channel).unwrap().push(e);
    }
    (out, ready.id.clone().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_a_new_process_after_sigkill() {
    let redis = RedisServer::start();
    let mut first = start(&redis).await;
    let mut log = Log::default();
    let mut sse = SseReader::open(&first.realtime(&ROOMS), None).await;
    sse.until("tidings.ready").await;
    for i in 0..12 {
        log.emit(&first, ROOMS[i % 3]).await;
    }
    let mut last_id = String::new();
    for _ in 0..8 {
        last_id = sse.next().await.unwrap().id.unwrap();
    }
    first.kill();
    // Frames already received but not processed are dropped with the connection, which ends.
    let mut unread = 0;
    while sse.next().await.is_some() {
        unread += 1;
        assert!(unread <= 4, "the killed process's stream ends");
    }

    // A new process on the same Redis, nothing emitted yet: the four unread events.
    let second = start(&redis).await;
    let mut sse = SseReader::open(&second.realtime(&ROOMS), Some(&last_id)).await;
    let (got, ready) = replay(&mut sse).await;
    assert_eq!(got, log.after(&last_id));
    assert_eq!(got.values().map(Vec::len).sum::<usize>(), 4);
    drop(sse);

    // Emitted through the new process while the client is away.
    for i in 0..9 {
        log.emit(&second, ROOMS[(i * 2) % 3]).await;
    }
    let mut sse = SseReader::open(&second.realtime(&ROOMS), Some(&ready)).await;
    let (got, _) = replay(&mut sse).await;
    assert_eq!(got, log.after(&ready));
    assert_eq!(got.values().map(Vec::len).sum::<usize>(), 9);

    // And live on the new process.
    let live = log.emit(&second, "room:b").await;
    assert_eq!(ev(&sse.next().await.unwrap()), live);

    // From the very first cursor, everything after it, once.
    let mut sse = SseReader::open(&second.realtime(&ROOMS), Some(&last_id)).await;
    let (got, _) = replay(&mut sse).await;
    assert_eq!(got, log.after(&last_id));
    assert_eq!(got.values().map(Vec::len).sum::<usize>(), 4 + 9 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emits_through_another_process_while_one_is_down_are_received() {
    let redis = RedisServer::start();
    let mut first = start(&redis).await;
    let other = start(&redis).await;
    let mut log = Log::default();
    let mut a = SseReader::open(&first.realtime(&ROOMS), None).await;
    let mut b = SseReader::open(&other.realtime(&ROOMS), None).await;
    a.until("tidings.ready").await;
    b.until("tidings.ready").await;

    for i in 0..5 {
        log.emit(&first, ROOMS[i % 3]).await;
    }
    let mut last_id = String::new();
    let mut on_other = Vec::new();
    for _ in 0..5 {
        last_id = a.next().await.unwrap().id.unwrap();
        on_other.push(ev(&b.next().await.unwrap()));
    }
    assert_eq!(
        on_other, log.events,
        "the other process fans out what the first stored"
    );

    first.kill();
    assert!(a.next().await.is_none());
    for i in 0..6 {
        let e = log.emit(&other, ROOMS[(i + 1) % 3]).await;
        assert_eq!(ev(&b.next().await.unwrap()), e, "live on the surviving process");
    }

    // The first process comes back (a new process, on a new port); the client resumes there.
    let restarted = start(&redis).await;
    let mut a = SseReader::open(&restarted.realtime(&ROOMS), Some(&last_id)).await;
    let (got, ready) = replay(&mut a).await;
    assert_eq!(got, log.after(&last_id));
    assert_eq!(got.values().map(Vec::len).sum::<usize>(), 6);
    let expected: Vec<String> = ROOMS
        .iter()
        .map(|r| {
            format!(
                "{r}={}",
                log.events.iter().rev().find(|e| e.channel == *r).unwrap().id
            )
        })
        .collect();
    assert_eq!(by_id(&ready), expected.join(","));

    let e = log.emit(&restarted, "room:c").await;
    assert_eq!(ev(&a.next().await.unwrap()), e);
    assert_eq!(
        ev(&b.next().await.unwrap()),
        e,
        "and the other process sees it too"
    );
}
