//! Faults, with the real binary and a real `redis-server`: history lost under a client's cursor
//! (a restart without persistence, `FLUSHALL`, `XDEL`), entries another tool wrote, Redis down
//! at start, and a Redis killed and restarted with AOF under a live client. Each is a case
//! RELIABILITY.md lists.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{msg, Binary, Frame, RedisServer, Spawn, SseReader, EMIT_KEY};

const ROOM: &str = "room:g";

/// Emits `text` to `channel` and returns the stored id (panics unless 200).
async fn emit(node: &Binary, channel: &str, text: &str) -> String {
    let (status, body) = try_emit(node, channel, text).await;
    assert_eq!(status, 200, "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// One emit, with `text` as its Idempotency-Key: retrying it can never store it twice.
async fn try_emit(node: &Binary, channel: &str, text: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(node.url("/emit"))
        .bearer_auth(EMIT_KEY)
        .header("Idempotency-Key", text.replace(' ', "_"))
        .timeout(Duration::from_secs(10))
        .json(&serde_json::json!({ "channel": channel, "event": "chat.message", "data": msg(text) }))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or_default())
}

/// Emits until the store takes it (after a restart), returning the id. An attempt that timed out
/// may have been stored: the idempotency key makes the retry answer its id instead of a copy.
async fn emit_when_back(node: &Binary, channel: &str, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = try_emit(node, channel, text).await;
        if status == 200 {
            return body["id"].as_str().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the store did not come back: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `id:` cursor of the frame that carried `text`, read from the start of `channel`.
async fn cursor_at(node: &Binary, channel: &str, text: &str) -> String {
    let url = format!("{}&cursor={channel}=0-0", node.realtime(&[channel]));
    let mut sse = SseReader::open(&url, None).await;
    loop {
        let f = sse.next().await.expect("the stream ended before the event");
        if f.event.as_deref() == Some("chat.message") && f.json()["data"]["text"] == text {
            let cursor = f.id.unwrap();
            assert!(
                cursor.contains('@'),
                "a cursor the server writes names the epoch: {cursor}"
            );
            return cursor;
        }
    }
}

/// The frames of a resume from `cursor`, up to and including `tidings.ready`.
async fn resume(node: &Binary, channel: &str, cursor: &str) -> Vec<Frame> {
    let mut sse = SseReader::open(&node.realtime(&[channel]), Some(cursor)).await;
    let mut frames = sse.until("tidings.ready").await;
    frames.retain(|f| f.event.is_some()); // the `retry:` hint
    frames
}

fn texts(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .filter(|f| f.event.as_deref() == Some("chat.message"))
        .map(|f| f.json()["data"]["text"].as_str().unwrap().to_string())
        .collect()
}

/// The first frame is a reset of `channel` for `reason`, then the events `want`, then ready.
fn assert_reset_then(frames: &[Frame], channel: &str, reason: &str, want: &[&str]) {
    let names: Vec<&str> = frames.iter().map(|f| f.event.as_deref().unwrap_or("")).collect();
    assert_eq!(names.first(), Some(&"tidings.reset"), "{names:?}");
    let reset = frames[0].json();
    assert_eq!(reset["channel"], channel, "{reset}");
    assert_eq!(reset["reason"], reason, "{reset}");
    assert_eq!(texts(frames), want, "{names:?}");
    assert_eq!(names.last(), Some(&"tidings.ready"));
}

/// The fault of issue 10, on the embedded store: the server restarts, so `g2` is gone, and `g3`
/// gets an id greater than the client's cursor. The epoch in the cursor tells.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_store_restart_gives_a_reset() {
    let first = Spawn::new().start().await;
    let g1 = emit(&first, ROOM, "g1").await;
    let cursor = cursor_at(&first, ROOM, "g1").await;
    emit(&first, ROOM, "g2").await;
    drop(first);

    let second = Spawn::new().start().await;
    let g3 = emit(&second, ROOM, "g3").await;
    let id = |s: &str| s.parse::<tidings::StreamId>().unwrap();
    assert!(id(&g3) > id(&g1), "by id alone nothing looks lost: {g3} > {g1}");
    assert_reset_then(&resume(&second, ROOM, &cursor).await, ROOM, "replaced", &["g3"]);
}

/// Redis without persistence restarts (or is flushed): the same, for a resuming client and for
/// one that stays connected through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_without_persistence_gives_a_reset() {
    let mut redis = RedisServer::start();
    let node = Spawn::new().redis(&redis.url()).start().await;
    emit(&node, ROOM, "g1").await;
    let cursor = cursor_at(&node, ROOM, "g1").await;
    emit(&node, ROOM, "g2").await;
    let mut live = SseReader::open(&node.realtime(&[ROOM]), Some(&cursor)).await;
    assert_eq!(texts(&live.until("tidings.ready").await), ["g2"]);

    redis.restart();
    emit_when_back(&node, ROOM, "g3").await;
    assert_reset_then(&resume(&node, ROOM, &cursor).await, ROOM, "replaced", &["g3"]);

    // The live client is not handed g3 as if it followed g2: it is told to resume, and its
    // resume says what happened.
    let frames = live.until("tidings.lagged").await;
    assert_eq!(texts(&frames), Vec::<String>::new(), "{frames:?}");
    let at = frames.last().unwrap().id.clone().unwrap();
    assert_reset_then(&resume(&node, ROOM, &at).await, ROOM, "replaced", &["g3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_gives_a_reset() {
    let redis = RedisServer::start();
    let node = Spawn::new().redis(&redis.url()).start().await;
    emit(&node, ROOM, "g1").await;
    let cursor = cursor_at(&node, ROOM, "g1").await;
    emit(&node, ROOM, "g2").await;
    let mut conn = redis.client().get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    emit(&node, ROOM, "g3").await;
    assert_reset_then(&resume(&node, ROOM, &cursor).await, ROOM, "replaced", &["g3"]);
}

/// `XDEL` of an entry after the cursor: `max-deleted-entry-id` says so (issue 14).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xdel_after_the_cursor_gives_a_reset() {
    let redis = RedisServer::start();
    let node = Spawn::new().redis(&redis.url()).start().await;
    emit(&node, ROOM, "g1").await;
    let cursor = cursor_at(&node, ROOM, "g1").await;
    let g2 = emit(&node, ROOM, "g2").await;
    emit(&node, ROOM, "g3").await;
    let mut conn = redis.client().get_multiplexed_async_connection().await.unwrap();
    let n: u32 = redis::cmd("XDEL")
        .arg(format!("tidings:{ROOM}"))
        .arg(&g2)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_reset_then(&resume(&node, ROOM, &cursor).await, ROOM, "trimmed", &["g3"]);
}

/// `XADD tidings:p1 * foo bar` used to stop live delivery, history and replay of `p1` for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_entry_does_not_poison_its_channel() {
    let redis = RedisServer::start();
    let node = Spawn::new().redis(&redis.url()).start().await;
    let mut live = SseReader::open(&node.realtime(&["p1"]), None).await;
    live.until("tidings.ready").await;
    let mut conn = redis.client().get_multiplexed_async_connection().await.unwrap();
    for fields in [
        &["foo", "bar"][..],
        &["e", "no.such.event", "d", "{}"],
        &["e", "chat.message", "d", "{oops"],
    ] {
        let mut cmd = redis::cmd("XADD");
        cmd.arg("tidings:p1").arg("*").arg(fields);
        let _: String = cmd.query_async(&mut conn).await.unwrap();
    }
    emit(&node, "p1", "after").await;

    let f = live
        .next_timeout(Duration::from_secs(10))
        .await
        .expect("live delivery goes on");
    assert_eq!(f.event.as_deref(), Some("chat.message"));
    assert_eq!(f.json()["data"]["text"], "after");

    let r = reqwest::get(node.url("/history?channel=p1")).await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let entries = body["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "only the readable entry: {body}");
    assert_eq!(entries[0]["data"]["text"], "after");

    let frames = resume(&node, "p1", "p1=0-0").await;
    assert_eq!(texts(&frames), ["after"]);
    let health = node.health().await;
    assert!(health["skipped_entries"].as_u64().unwrap() >= 3, "{health}");
    assert!(node.log().contains("skipping a stream entry"), "{}", node.log());
}

/// A Redis that is down at start: retried for --redis-wait, each attempt logged with the
/// address, then one line, with no backtrace whatever RUST_BACKTRACE says.
#[tokio::test]
async fn redis_down_at_start_is_one_line_naming_the_address() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let out = Command::new(support::tidings_bin())
        .args(["--bind", "127.0.0.1:0", "--schema"])
        .arg(support::schema_path())
        .args([
            "--redis",
            &format!("redis://:hunter2@127.0.0.1:{port}"),
            "--redis-wait",
            "2",
        ])
        .env("RUST_BACKTRACE", "1")
        .env("TIDINGS_EMIT_KEY", EMIT_KEY)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(!out.status.success());
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("hunter2"),
        "the password is never logged: {stderr}"
    );
    assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    let attempts = lines.iter().filter(|l| l.contains("retrying")).count();
    assert!(attempts >= 2, "each attempt is logged: {stderr}");
    assert!(lines
        .iter()
        .filter(|l| l.contains("retrying"))
        .all(|l| l.contains(&format!("127.0.0.1:{port}"))));
    let last = lines.last().unwrap();
    assert!(
        last.starts_with("error: cannot reach Redis at 127.0.0.1:"),
        "{stderr}"
    );
    assert!(last.contains(&format!("127.0.0.1:{port}")), "{last}");
    let errors = lines.iter().filter(|l| l.starts_with("error")).count();
    assert_eq!(errors, 1, "one fatal line: {stderr}");
    // Each cause once: the refusal is not repeated along the chain.
    let cause = "Connection refused";
    assert_eq!(last.matches(cause).count(), 1, "{last}");
}

/// Redis killed (-9) and restarted with AOF under a live client: emits fail fast while it is
/// down, `/health` says so, and afterwards every acknowledged event arrives exactly once, in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_with_aof_loses_no_acknowledged_event() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let node = Spawn::new().redis(&redis.url()).start().await;
    let mut live = SseReader::open(&node.realtime(&[ROOM]), None).await;
    live.until("tidings.ready").await;
    let mut acked = Vec::new();
    for i in 0..5 {
        emit(&node, ROOM, &format!("before {i}")).await;
        acked.push(format!("before {i}"));
    }
    redis.kill();
    let started = Instant::now();
    let (status, body) = try_emit(&node, ROOM, "while down").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let r = reqwest::get(node.url("/health")).await.unwrap();
    assert_eq!(r.status(), 503);
    redis.restart();
    for i in 0..5 {
        acked.push(format!("after {i}"));
        emit_when_back(&node, ROOM, &format!("after {i}")).await;
    }
    let mut got = Vec::new();
    while got.len() < acked.len() {
        let f = live
            .next_timeout(Duration::from_secs(15))
            .await
            .expect("every acknowledged event arrives");
        assert_ne!(
            f.event.as_deref(),
            Some("tidings.reset"),
            "nothing was lost: {f:?}"
        );
        if f.event.as_deref() == Some("chat.message") {
            got.push(f.json()["data"]["text"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(got, acked, "exactly once, in order");
}

/// Redis stalls (`CLIENT PAUSE … WRITE`): appends waiting for it are bounded, emits beyond the
/// bound answer 503 `store_busy` at once instead of piling up, and every emit answered 200 is
/// stored when Redis resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_bounds_the_appends_waiting_for_it() {
    let redis = RedisServer::start();
    let node = Spawn::new()
        .redis(&redis.url())
        .args(&["--redis-max-pending", "20"])
        .start()
        .await;
    emit(&node, "busy", "warm-up").await;
    let mut conn = redis.client().get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("WRITE")
        .query_async(&mut conn)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let started = Instant::now();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let (http, url) = (http.clone(), node.url("/emit"));
            tokio::spawn(async move {
                let r = http
                    .post(url)
                    .bearer_auth(EMIT_KEY)
                    .json(&serde_json::json!({ "channel": "busy", "event": "chat.message", "data": msg(&format!("e{i}")) }))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or_default();
                (i, status, body, started.elapsed())
            })
        })
        .collect();
    let mut acked = Vec::new();
    let mut busy = 0;
    for t in tasks {
        let (i, status, body, took) = t.await.unwrap();
        match status {
            200 => acked.push(format!("e{i}")),
            503 if body["error"] == "store_busy" => {
                busy += 1;
                assert!(
                    took < Duration::from_millis(1500),
                    "refused during the stall, not after it: {took:?}"
                );
                assert!(body["message"].as_str().unwrap().contains("20"), "{body}");
            }
            other => panic!("{other} {body}"),
        }
    }
    assert!(busy >= 150, "at most the bound waited: {busy} of 200 refused");
    assert!(
        !acked.is_empty(),
        "the ones within the bound were stored once Redis resumed"
    );
    let r: Value = reqwest::get(node.url("/history?channel=busy&limit=1000"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut held: Vec<String> = r["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["text"].as_str().unwrap().to_string())
        .filter(|t| t != "warm-up")
        .collect();
    held.sort();
    acked.sort();
    assert_eq!(held, acked, "exactly the acknowledged emits are stored");
}

/// Keyspace notifications turned off under a live stream (issue 14): events still arrive,
/// through the full read every tail call makes when it waits its whole time (5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_keyspace_notifications_delay_events_but_lose_none() {
    let redis = RedisServer::start();
    let node = Spawn::new().redis(&redis.url()).start().await;
    let mut live = SseReader::open(&node.realtime(&[ROOM]), None).await;
    live.until("tidings.ready").await;
    emit(&node, ROOM, "with notifications").await;
    assert_eq!(texts(&[live.next().await.unwrap()]), ["with notifications"]);
    let mut conn = redis.client().get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("")
        .query_async(&mut conn)
        .await
        .unwrap();
    let sent = Instant::now();
    emit(&node, ROOM, "without").await;
    // SseReader skips heartbeats: the next frame is the event.
    let f = live
        .next_timeout(Duration::from_secs(10))
        .await
        .expect("delivered within the sweep's bound");
    assert_eq!(texts(&[f]), ["without"]);
    assert!(
        // One tail wait (5 s), with room for a loaded machine.
        sent.elapsed() <= Duration::from_millis(7_500),
        "{:?}: the bound is one tail wait",
        sent.elapsed()
    );
}

/// A node started while Redis loads its dataset after a restart (`-LOADING`) waits for it
/// instead of exiting: the chaos soak found nodes that never came back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_while_redis_loads_its_dataset_waits() {
    let mut redis = RedisServer::start_with(&["--save", "3600 1", "--enable-debug-command", "yes"]);
    // A blocking connection: populating and saving take seconds, longer than async timeouts.
    let mut conn = redis.client().get_connection().unwrap();
    let _: () = redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(3_000_000)
        .query(&mut conn)
        .unwrap();
    let _: () = redis::cmd("SAVE").query(&mut conn).unwrap();
    drop(conn);
    redis.restart_loading();
    let mut probe = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let loading = redis::cmd("XREVRANGE")
        .arg("tidings:x")
        .arg("+")
        .arg("-")
        .query_async::<redis::Value>(&mut probe)
        .await;
    let Err(e) = loading else {
        panic!("the dataset loaded before the node started; the test needs a bigger one");
    };
    assert!(e.to_string().to_lowercase().contains("loading"), "{e}");
    let node = Spawn::new().redis(&redis.url()).start().await;
    assert!(node.log().contains("retrying"), "{}", node.log());
    emit(&node, ROOM, "after loading").await;
}
