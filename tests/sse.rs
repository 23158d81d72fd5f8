//! `GET /realtime`: the exact bytes of the stream, its headers, filters and limits, the 400s,
//! heartbeats, the lagged path, and an end-to-end run with a third-party SSE client
//! (`eventsource-stream`), on both stores.

#[macro_use]
mod support;

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::{FutureExt as _, Stream, StreamExt};
use serde_json::{json, Value};
use support::{assert_error, by_id, msg, Backend, SseReader, TestServer};
use tidings::{Config, Cursor, Retention, StreamId};
use tidings_test_events::{Availability, ChatMessage, ChatTyping, Event, NotificationAlert, PresenceStatus};

on_both_backends!(
    fresh_connection_and_event_frames_are_byte_exact,
    stream_headers,
    events_filter_drops_others_but_the_cursor_advances,
    bad_requests_are_400_json,
    too_many_channels_is_400_naming_the_limit,
    duplicate_and_comma_separated_channels_collapse,
    heartbeats_arrive_and_every_field_is_one_line,
    eventsource_client_receives_typed_events_and_resumes,
);

/// Single-threaded so the hub hands out a whole burst before the stream task runs.
#[tokio::test(flavor = "current_thread")]
async fn memory_subscriber_that_falls_behind_gets_lagged_then_resumes() {
    lagged(Backend::Memory).await;
}

/// Single-threaded so the hub hands out a whole burst before the stream task runs.
#[tokio::test(flavor = "current_thread")]
async fn redis_subscriber_that_falls_behind_gets_lagged_then_resumes() {
    lagged(Backend::redis()).await;
}

/// Single-threaded so the hub hands out a whole burst before the stream task runs.
#[tokio::test(flavor = "current_thread")]
async fn redis_xread_subscriber_that_falls_behind_gets_lagged_then_resumes() {
    lagged(Backend::redis_xread()).await;
}

/// The subscriber queue is clamped to half the history kept (issue 14): with a history of 10
/// and the default queue (256), a burst of 10 overflows a queue of 5, so the subscriber is told
/// it lagged while its cursor is still within history, and its resume needs no reset. Unclamped,
/// the burst would sit in the queue.
#[tokio::test(flavor = "current_thread")]
async fn the_subscriber_queue_is_clamped_to_half_the_history() {
    let retention = Retention::default().max_len(10);
    let store = std::sync::Arc::new(tidings::MemoryStore::new(retention.clone()));
    let s = TestServer::start(store, |c| c.retention(retention)).await;
    assert_eq!(Config::default().limits.subscriber_queue, 256);
    let mut sse = SseReader::open(&s.url("/realtime?channel=room:1"), None).await;
    sse.until("tidings.ready").await;
    let room = s.rt.channel("room:1");
    for i in 0..10 {
        let alert: NotificationAlert = format!("burst {i}").parse().unwrap();
        room.emit(alert)
            .now_or_never()
            .expect("the memory store appends without waiting")
            .unwrap();
    }
    let frames = tokio::time::timeout(Duration::from_secs(10), sse.until("tidings.lagged"))
        .await
        .expect("tidings.lagged, not a queue that holds the whole burst");
    let lagged = frames.last().unwrap().id.clone().unwrap();
    let delivered = frames
        .iter()
        .filter(|f| f.event.as_deref() == Some("notification.alert"))
        .count();
    assert_eq!(delivered, 5, "the queue held half the history");
    let mut resumed = SseReader::open(&s.url("/realtime?channel=room:1"), Some(&lagged)).await;
    let frames = resumed.until("tidings.ready").await;
    assert!(
        frames.iter().all(|f| f.event.as_deref() != Some("tidings.reset")),
        "{frames:?}"
    );
    let rest: Vec<Value> = frames
        .iter()
        .filter(|f| f.event.as_deref() == Some("notification.alert"))
        .map(|f| f.json()["data"].clone())
        .collect();
    let want: Vec<Value> = (5..10).map(|i| json!(format!("burst {i}"))).collect();
    assert_eq!(rest, want, "the other half, from history");
}

/// A replay of three pages and more (a page is 500 entries) reaches `tidings.ready` with every
/// entry once: each page starts after the last (issue 14: a page cursor that does not move spins
/// without a frame, and the reader's per-frame bound fails the test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_of_many_pages_reaches_ready() {
    let retention = Retention::default().max_len(5000);
    let store = std::sync::Arc::new(tidings::MemoryStore::new(retention.clone()));
    let s = TestServer::start(store, |c| c.retention(retention)).await;
    let room = s.rt.channel("room:1");
    for i in 0..1_600 {
        let alert: NotificationAlert = format!("e{i}").parse().unwrap();
        room.emit(alert).await.unwrap();
    }
    let mut sse = SseReader::open(&s.url("/realtime?channel=room:1"), Some("room:1=0-0")).await;
    let frames = sse.until("tidings.ready").await;
    let got: Vec<Value> = frames
        .iter()
        .filter(|f| f.event.as_deref() == Some("notification.alert"))
        .map(|f| f.json()["data"].clone())
        .collect();
    let want: Vec<Value> = (0..1_600).map(|i| json!(format!("e{i}"))).collect();
    assert_eq!(got, want);
}

/// Cursors with epochs on the nested `router()` (the hyper path), through a parser we did not
/// write: the `id:` names the epoch, a resume from it is exact, and a resume from another epoch
/// gets `tidings.reset` with reason `replaced` before the history held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epoch_cursors_on_the_nested_router_with_eventsource_stream() {
    let base = support::hyper_server(|c| c).await;
    let emit = |text: &'static str| {
        let url = format!("{base}/emit");
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(support::EMIT_KEY)
                .json(&json!({ "channel": "room:1", "event": "chat.message", "data": msg(text) }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    let open = |last: Option<String>| {
        let url = format!("{base}/realtime?channel=room:1&cursor=room:1%3D0-0");
        async move {
            let mut req = reqwest::Client::new().get(url);
            if let Some(id) = last {
                req = req.header("Last-Event-ID", id);
            }
            Box::pin(req.send().await.unwrap().bytes_stream().eventsource())
        }
    };
    emit("one").await;
    emit("two").await;
    let mut stream = open(None).await;
    let first = next_event(&mut stream).await;
    assert_eq!(first.event, "chat.message");
    let (_, position) = first.id.split_once('=').unwrap();
    let (_, epoch) = position.split_once('@').expect("the id names the epoch");
    assert_eq!(epoch.len(), 8, "{}", first.id);
    drop(stream);

    let mut stream = open(Some(first.id.clone())).await;
    let next = next_event(&mut stream).await;
    assert_eq!(
        serde_json::from_str::<Value>(&next.data).unwrap()["data"]["text"],
        "two"
    );
    assert_eq!(next_event(&mut stream).await.event, "tidings.ready");
    drop(stream);

    let other = if epoch == "00000000" {
        "00000001"
    } else {
        "00000000"
    };
    let stale = first.id.replace(epoch, other);
    let mut stream = open(Some(stale)).await;
    let reset = next_event(&mut stream).await;
    assert_eq!(reset.event, "tidings.reset");
    assert_eq!(
        serde_json::from_str::<Value>(&reset.data).unwrap()["reason"],
        "replaced"
    );
    let texts: Vec<Value> = [next_event(&mut stream).await, next_event(&mut stream).await]
        .iter()
        .map(|e| serde_json::from_str::<Value>(&e.data).unwrap()["data"]["text"].clone())
        .collect();
    assert_eq!(
        texts,
        [json!("one"), json!("two")],
        "everything the history holds"
    );
    assert_eq!(next_event(&mut stream).await.event, "tidings.ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_data_written_by_another_tool_travels_on_one_line() {
    foreign_multiline_data(Backend::redis()).await;
}

/// The next event from a third-party SSE client stream, with a timeout.
async fn next_event<S, E>(stream: &mut S) -> eventsource_stream::Event
where
    S: Stream<Item = Result<eventsource_stream::Event, E>> + Unpin,
    E: std::fmt::Debug,
{
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("timed out waiting for an event")
        .expect("stream ended")
        .expect("valid SSE")
}

async fn start(b: &Backend, tweak: impl FnOnce(Config) -> Config) -> TestServer {
    TestServer::start(b.store(Retention::default(), "t:").await, tweak).await
}

/// GET with optional raw Last-Event-ID bytes; returns status, content-type and JSON body.
async fn get_error(url: &str, last_event_id: Option<&[u8]>) -> (u16, String, Value) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(id) = last_event_id {
        req = req.header(
            "last-event-id",
            reqwest::header::HeaderValue::from_bytes(id).unwrap(),
        );
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    // A request that should have been refused but opened a stream must fail the test, not hang
    // reading a body that never ends.
    assert_ne!(
        content_type, "text/event-stream",
        "{url}: a stream opened ({status})"
    );
    let body = tokio::time::timeout(std::time::Duration::from_secs(10), r.json())
        .await
        .unwrap_or_else(|_| panic!("{url}: no complete body within 10 s"));
    (status, content_type, body.unwrap_or(Value::Null))
}

/// Checks the framing of everything a stream sent: blocks end with a blank line; a block is the
/// `retry:` line, the `tidings.ping` heartbeat, or exactly `id:`, `event:`, `data:` with one-line
/// values (data being one JSON document), so no value can smuggle in a line of its own.
fn assert_well_formed(raw: &str) {
    assert!(!raw.contains('\r'), "carriage return in {raw:?}");
    assert!(
        raw.ends_with("\n\n"),
        "stream does not end on a frame boundary: {raw:?}"
    );
    for block in raw[..raw.len() - 2].split("\n\n") {
        let lines: Vec<&str> = block.split('\n').collect();
        match lines.as_slice() {
            [retry] if retry.starts_with("retry: ") => {
                assert!(
                    retry["retry: ".len()..].bytes().all(|b| b.is_ascii_digit()),
                    "{retry:?}"
                );
            }
            ["event: tidings.ping", "data: {}"] => {}
            [id, event, data] => {
                let id = id
                    .strip_prefix("id: ")
                    .unwrap_or_else(|| panic!("bad id line in {block:?}"));
                Cursor::parse(id).unwrap_or_else(|e| panic!("id {id:?} is not a cursor: {e}"));
                let event = event
                    .strip_prefix("event: ")
                    .unwrap_or_else(|| panic!("bad event line in {block:?}"));
                assert!(
                    !event.is_empty() && event.bytes().all(|b| b.is_ascii_graphic()),
                    "{event:?}"
                );
                let data = data
                    .strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("bad data line in {block:?}"));
                serde_json::from_str::<Value>(data)
                    .unwrap_or_else(|e| panic!("data {data:?} is not JSON: {e}"));
            }
            _ => panic!("malformed SSE block {block:?}"),
        }
    }
}

fn ready_frame(cursor: &str, channels: &[&str]) -> String {
    let channels: Vec<String> = channels.iter().map(|c| format!("\"{c}\"")).collect();
    format!(
        "id: {cursor}\nevent: tidings.ready\ndata: {{\"cursor\":\"{cursor}\",\"channels\":[{}],\"heartbeat_ms\":15000}}\n\n",
        channels.join(",")
    )
}

/// `id` with the channel's epoch: the position a cursor the server writes holds.
async fn position(s: &TestServer, channel: &str, id: &str) -> String {
    let channel = tidings::Channel::new(channel).unwrap();
    let epoch = s.rt.store().position(&channel).await.unwrap().epoch;
    format!(
        "{id}@{}",
        epoch.expect("a stream tidings created names its epoch")
    )
}

fn event_frame(cursor: &str, id: &str, channel: &str, event: &str, data: &str) -> String {
    format!(
        "id: {cursor}\nevent: {event}\ndata: {{\"id\":\"{id}\",\"channel\":\"{channel}\",\"event\":\"{event}\",\"data\":{data}}}\n\n"
    )
}

async fn fresh_connection_and_event_frames_are_byte_exact(b: Backend) {
    let s = start(&b, |c| c).await;
    let mut sse = SseReader::open(&s.url("/realtime?channel=room:1&channel=room:2"), None).await;
    sse.until("tidings.ready").await;
    let mut expected = format!(
        "retry: 2000\n\n{}",
        ready_frame("room:1=0-0,room:2=0-0", &["room:1", "room:2"])
    );
    assert_eq!(sse.raw, expected);

    // Quotes, backslashes, newlines and non-ASCII text are escaped inside the one data line.
    let id1 = s
        .emit_ok(
            "room:2",
            "chat.message",
            json!({ "text": "hi \"there\"\\\nline\u{2028}two é", "user": "ada" }),
        )
        .await;
    sse.next().await.unwrap();
    let p1 = position(&s, "room:2", &id1).await;
    expected += &event_frame(
        &format!("room:1=0-0,room:2={p1}"),
        &id1,
        "room:2",
        "chat.message",
        "{\"text\":\"hi \\\"there\\\"\\\\\\nline\u{2028}two é\",\"user\":\"ada\"}",
    );
    assert_eq!(sse.raw, expected);

    tokio::time::sleep(Duration::from_millis(3)).await; // a later millisecond: ids order the replay below
    let id2 = s.emit_ok("room:1", "notification.alert", json!("deploy")).await;
    sse.next().await.unwrap();
    let p2 = position(&s, "room:1", &id2).await;
    expected += &event_frame(
        &format!("room:1={p2},room:2={p1}"),
        &id2,
        "room:1",
        "notification.alert",
        r#""deploy""#,
    );
    assert_eq!(sse.raw, expected);
    assert_well_formed(&sse.raw);

    // The same two events replayed from a cursor, then the ready frame, on a custom retry.
    // (Its own key prefix: on Redis the first server's events share the database.)
    let store = b.store(Retention::default(), "t2:").await;
    let s2 = TestServer::start(store, |c| c.retry(Duration::from_millis(1500))).await;
    let id3 = s2
        .emit_ok("room:2", "chat.typing", json!({ "user": "ada", "active": true }))
        .await;
    tokio::time::sleep(Duration::from_millis(3)).await;
    let id4 = s2
        .emit_ok(
            "room:1",
            "presence.status",
            json!({ "user": "ada", "status": "away" }),
        )
        .await;
    let mut sse = SseReader::open(
        &s2.url("/realtime?channel=room:1&channel=room:2"),
        Some("room:1=0-0,room:2=0-0"),
    )
    .await;
    sse.until("tidings.ready").await;
    let (p3, p4) = (
        position(&s2, "room:2", &id3).await,
        position(&s2, "room:1", &id4).await,
    );
    let typing = event_frame(
        &format!("room:1=0-0,room:2={p3}"),
        &id3,
        "room:2",
        "chat.typing",
        r#"{"user":"ada","active":true}"#,
    );
    let presence = event_frame(
        &format!("room:1={p4},room:2={p3}"),
        &id4,
        "room:1",
        "presence.status",
        r#"{"user":"ada","status":"away"}"#,
    );
    let ready = ready_frame(&format!("room:1={p4},room:2={p3}"), &["room:1", "room:2"]);
    assert_eq!(sse.raw, format!("retry: 1500\n\n{typing}{presence}{ready}"));
    assert_well_formed(&sse.raw);
}

async fn stream_headers(b: Backend) {
    let s = start(&b, |c| c).await;
    let r = reqwest::get(s.url("/realtime?channel=room:1")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert_eq!(r.headers()["cache-control"], "no-cache");
    assert_eq!(r.headers()["x-accel-buffering"], "no");
    assert!(
        r.headers().get("content-length").is_none(),
        "a stream has no length"
    );
}

async fn events_filter_drops_others_but_the_cursor_advances(b: Backend) {
    let s = start(&b, |c| c).await;
    let base = "/realtime?channel=room:1&channel=room:2";
    let mut all = SseReader::open(&s.url(base), None).await;
    let mut messages = SseReader::open(&s.url(&format!("{base}&events=chat.message")), None).await;
    let mut two = SseReader::open(
        &s.url(&format!("{base}&events=chat.message,presence.status")),
        None,
    )
    .await;
    for sse in [&mut all, &mut messages, &mut two] {
        sse.until("tidings.ready").await;
    }
    // Emit one at a time and wait until the unfiltered reader has it: the hub hands an entry to
    // every subscriber at once, so the filtered readers have it queued in the same order.
    let mut ids = Vec::new();
    for (channel, event, data) in [
        ("room:2", "chat.typing", json!({ "user": "ada", "active": true })),
        ("room:1", "chat.message", msg("m1")),
        (
            "room:2",
            "presence.status",
            json!({ "user": "ada", "status": "online" }),
        ),
        ("room:2", "chat.message", msg("m2")),
        ("room:1", "chat.typing", json!({ "user": "bob", "active": false })),
        ("room:1", "notification.alert", json!("sentinel")),
    ] {
        let id = s.emit_ok(channel, event, data).await;
        let f = all.next().await.unwrap();
        assert_eq!(f.json()["id"], id);
        ids.push(id);
        // A later millisecond for the next id, so ids across channels follow emit order (the
        // replay below merges channels by id).
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let [t1, m1, p1, m2, t2, _] = ids.as_slice() else {
        unreachable!()
    };
    let seen = |frames: Vec<support::Frame>| -> Vec<(String, String)> {
        frames
            .into_iter()
            .map(|f| (f.event.unwrap_or_default(), by_id(&f.id.unwrap_or_default())))
            .collect()
    };
    // The sentinel is filtered out of both; one more message ends each read.
    let end = s.emit_ok("room:2", "chat.message", msg("end")).await;
    let got = seen(messages.until("chat.message").await);
    assert_eq!(
        got,
        [("chat.message".to_string(), format!("room:1={m1},room:2={t1}"))]
    );
    let got = seen(messages.until("chat.message").await);
    assert_eq!(
        got,
        [("chat.message".to_string(), format!("room:1={m1},room:2={m2}"))]
    );
    let alert = &ids[5];
    let got = seen(messages.until("chat.message").await);
    assert_eq!(
        got,
        [("chat.message".to_string(), format!("room:1={alert},room:2={end}"))],
        "the cursor moved over the filtered typing and alert events"
    );
    let mut got = Vec::new();
    while got.len() < 4 {
        got.push(two.next().await.unwrap());
    }
    assert_eq!(
        seen(got),
        [
            ("chat.message".to_string(), format!("room:1={m1},room:2={t1}")),
            ("presence.status".to_string(), format!("room:1={m1},room:2={p1}")),
            ("chat.message".to_string(), format!("room:1={m1},room:2={m2}")),
            ("chat.message".to_string(), format!("room:1={alert},room:2={end}")),
        ]
    );
    assert_well_formed(&messages.raw);
    assert_well_formed(&two.raw);

    // Replay applies the same filter and still moves the cursor over what it drops.
    let mut replay = SseReader::open(
        &s.url(&format!("{base}&events=chat.message")),
        Some("room:1=0-0,room:2=0-0"),
    )
    .await;
    let frames = seen(replay.until("tidings.ready").await);
    let _ = t2;
    assert_eq!(
        frames[1..],
        [
            ("chat.message".to_string(), format!("room:1={m1},room:2={t1}")),
            ("chat.message".to_string(), format!("room:1={m1},room:2={m2}")),
            ("chat.message".to_string(), format!("room:1={alert},room:2={end}")),
            (
                "tidings.ready".to_string(),
                format!("room:1={alert},room:2={end}")
            ),
        ]
    );
    // An empty filter means every event.
    let mut everything =
        SseReader::open(&s.url(&format!("{base}&events=")), Some("room:1=0-0,room:2=0-0")).await;
    assert_eq!(everything.until("tidings.ready").await.len(), 1 + 7 + 1);
}

async fn bad_requests_are_400_json(b: Backend) {
    let s = start(&b, |c| c).await;
    let long_cursor = format!("room:1={}", "1".repeat(tidings::MAX_CURSOR_LEN));
    let long_query = format!("channel=room:1&cursor={long_cursor}");
    let cases: Vec<(&str, &str, &[&str])> = vec![
        ("", "invalid_channel", &["channel="]),
        ("events=chat.message", "invalid_channel", &["channel="]),
        ("channel=", "invalid_channel", &["empty"]),
        ("channel=room%201", "invalid_channel", &["allowed are"]),
        ("channel=room:1,,room:2", "invalid_channel", &["empty"]),
        ("channel=%7Broom%7D", "invalid_channel", &["allowed are"]),
        ("channel=room:1%0Aevent:x", "invalid_channel", &["allowed are"]),
        ("channel=room:1&foo=bar", "invalid_query", &["foo", "allowed"]),
        (
            "channel=room:1&events=chat.message,chat.shout",
            "unknown_event",
            &["chat.shout", "chat.message", "presence.status"],
        ),
        ("channel=room:1&events=,", "unknown_event", &["known events"]),
        (
            "channel=room:1&events=tidings.ready",
            "unknown_event",
            &["tidings.ready"],
        ),
        (
            "channel=room:1&events=chat.message&events=chat.typing",
            "invalid_query",
            &["events"],
        ),
        (
            "channel=room:1&cursor=garbage",
            "invalid_cursor",
            &["garbage", "channel=ms-seq"],
        ),
        ("channel=room:1&cursor=room:1%3Dabc", "invalid_cursor", &["abc"]),
        (
            "channel=room:1&cursor=room:1%3D1-0,room:1%3D2-0",
            "invalid_cursor",
            &["twice"],
        ),
        (
            "channel=room:1&cursor=room%201%3D1-0",
            "invalid_cursor",
            &["allowed are"],
        ),
        (
            "channel=room:1&cursor=room:1%3D1-0%0Aevent:%20x",
            "invalid_cursor",
            &[],
        ),
        (
            "channel=room:1&cursor=room:1%3D1-0%0D%0Adata:%20x",
            "invalid_cursor",
            &[],
        ),
        (
            "channel=room:1&cursor=room:1%3D1-0%0A%0Aid:%20x",
            "invalid_cursor",
            &[],
        ),
        (
            "channel=room:1&cursor=room:1%3D1-0&cursor=room:1%3D2-0",
            "invalid_query",
            &["cursor"],
        ),
        (&long_query, "invalid_cursor", &["at most"]),
    ];
    for (query, code, mentions) in cases {
        let (status, content_type, body) = get_error(&s.url(&format!("/realtime?{query}")), None).await;
        assert_eq!(content_type, "application/json", "{query}");
        assert_error(status, &body, 400, code, mentions);
    }
    let url = s.url("/realtime?channel=room:1");
    let headers: Vec<(&[u8], &[&str])> = vec![
        (b"garbage", &["garbage"]),
        (b"room:1=1-0\xc3\xa9", &["ASCII"]),
        (b"room:1=1-0\xff", &["ASCII"]),
        (b"room:1=1-0 event: x", &[]),
        (b"room:1=1-0,room:1=1-0", &["twice"]),
    ];
    for (header, mentions) in headers {
        let (status, _, body) = get_error(&url, Some(header)).await;
        assert_error(status, &body, 400, "invalid_cursor", mentions);
    }
    // The header wins over a good query cursor, so a bad header is refused even then.
    let (status, _, body) = get_error(
        &s.url("/realtime?channel=room:1&cursor=room:1%3D0-0"),
        Some(b"nope"),
    )
    .await;
    assert_error(status, &body, 400, "invalid_cursor", &["nope"]);
}

async fn too_many_channels_is_400_naming_the_limit(b: Backend) {
    let s = start(&b, |mut c| {
        c.limits.max_channels = 3;
        c
    })
    .await;
    let (status, _, body) = get_error(&s.url("/realtime?channel=a,b,c,d"), None).await;
    assert_error(
        status,
        &body,
        400,
        "too_many_channels",
        &["4 channels", "at most 3"],
    );
    assert_eq!(body["limit"], 3);
    let (status, _, body) = get_error(
        &s.url("/realtime?channel=a&channel=b&channel=c&channel=d&channel=e"),
        None,
    )
    .await;
    assert_error(
        status,
        &body,
        400,
        "too_many_channels",
        &["5 channels", "at most 3"],
    );
    // At the limit, and duplicates count once.
    let mut sse = SseReader::open(&s.url("/realtime?channel=a,b,c&channel=a&channel=c"), None).await;
    let ready = sse.until("tidings.ready").await.pop().unwrap();
    assert_eq!(ready.id.as_deref(), Some("a=0-0,b=0-0,c=0-0"));
}

async fn duplicate_and_comma_separated_channels_collapse(b: Backend) {
    let s = start(&b, |c| c).await;
    let mut sse = SseReader::open(
        &s.url("/realtime?channel=room:1&channel=room:1,room:2&channel=room:2,room:1"),
        None,
    )
    .await;
    let ready = sse.until("tidings.ready").await.pop().unwrap();
    assert_eq!(ready.id.as_deref(), Some("room:1=0-0,room:2=0-0"));
    assert_eq!(ready.json()["channels"], json!(["room:1", "room:2"]));
    // Request order sets cursor order.
    let mut reversed = SseReader::open(&s.url("/realtime?channel=room:2,room:1"), None).await;
    let ready = reversed.until("tidings.ready").await.pop().unwrap();
    assert_eq!(ready.id.as_deref(), Some("room:2=0-0,room:1=0-0"));
    assert_eq!(ready.json()["channels"], json!(["room:2", "room:1"]));

    let a = s.emit_ok("room:1", "chat.message", msg("a")).await;
    let b2 = s.emit_ok("room:2", "chat.message", msg("b")).await;
    let c = s.emit_ok("room:1", "chat.message", msg("c")).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(
            sse.next().await.unwrap().json()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    got.sort_by_key(|id| id.parse::<StreamId>().unwrap());
    let mut want = vec![a, b2, c.clone()];
    want.sort_by_key(|id| id.parse::<StreamId>().unwrap());
    assert_eq!(got, want, "each event once");
    let d = s.emit_ok("room:2", "chat.message", msg("d")).await;
    assert_eq!(
        sse.next().await.unwrap().json()["id"],
        d,
        "no duplicate before the next event"
    );
    let last = reversed.until("chat.message").await;
    assert_eq!(last.len(), 1);
    assert_well_formed(&sse.raw);
    let _ = c;
}

async fn heartbeats_arrive_and_every_field_is_one_line(b: Backend) {
    let s = start(&b, |c| c.heartbeat(Duration::from_millis(200))).await;
    let mut sse = SseReader::open(&s.url("/realtime?channel=room:1"), None).await;
    sse.until("tidings.ready").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let nasty = [
        "two\nlines",
        "crlf\r\nline",
        "cr\ronly",
        "\n\ndata: injected\n\nid: 0-0\n",
        ": not a comment\nevent: tidings.ready",
        "nul \u{0} and tab \t",
        "separators \u{2028}\u{2029}\u{85}",
    ];
    for text in nasty {
        s.emit_ok("room:1", "chat.message", msg(text)).await;
        let f = sse.next().await.unwrap();
        assert_eq!(f.event.as_deref(), Some("chat.message"));
        assert_eq!(f.json()["data"]["text"], text, "round trip");
    }
    s.emit_ok("room:1", "notification.alert", json!("line\nbreak"))
        .await;
    assert_eq!(sse.next().await.unwrap().json()["data"], "line\nbreak");
    // Heartbeats are events EventSource shows the page, each on its own; the reader skips them.
    let beats = sse.raw.matches("event: tidings.ping\ndata: {}\n\n").count();
    assert!(beats >= 2, "expected heartbeats in {:?}", sse.raw);
    assert_eq!(sse.pings, beats);
    assert_well_formed(&sse.raw);
}

async fn eventsource_client_receives_typed_events_and_resumes(b: Backend) {
    let s = start(&b, |c| c).await;
    let url = s.url("/realtime?channel=room:1&channel=room:2");
    let response = reqwest::get(&url).await.unwrap();
    let mut stream = Box::pin(response.bytes_stream().eventsource());
    let next = next_event;
    let ready = next(&mut stream).await;
    assert_eq!(ready.event, "tidings.ready");
    assert_eq!(ready.id, "room:1=0-0,room:2=0-0");

    let sent: Vec<(&str, Event)> = vec![
        (
            "room:1",
            ChatMessage {
                text: "hello".parse().unwrap(),
                user: "ada".parse().unwrap(),
                reply_to: Some("0-1".into()),
                mentions: vec!["bob".parse().unwrap()],
            }
            .into(),
        ),
        (
            "room:2",
            ChatTyping {
                user: "bob".parse().unwrap(),
                active: true,
            }
            .into(),
        ),
        ("room:2", NotificationAlert::try_from("heads up").unwrap().into()),
        (
            "room:1",
            PresenceStatus {
                user: "cy".parse().unwrap(),
                status: Availability::Offline,
            }
            .into(),
        ),
    ];
    let mut positions =
        std::collections::HashMap::from([("room:1", StreamId::ZERO), ("room:2", StreamId::ZERO)]);
    let mut last_id = String::new();
    for (channel, event) in &sent {
        let id = s.rt.channel(channel).emit(event.clone()).await.unwrap();
        positions.insert(*channel, id);
        let ev = next(&mut stream).await;
        assert_eq!(ev.event, event.name());
        let envelope: Value = serde_json::from_str(&ev.data).unwrap();
        assert_eq!(envelope["id"], id.to_string());
        assert_eq!(envelope["channel"], *channel);
        assert_eq!(envelope["event"], event.name());
        let decoded = Event::decode(&ev.event, envelope["data"].clone())
            .unwrap()
            .unwrap();
        assert_eq!(&decoded, event);
        let cursor = Cursor::parse(&ev.id).unwrap();
        for (name, pos) in &positions {
            assert_eq!(
                cursor.get(&tidings::Channel::new(name).unwrap()).map(|p| p.id),
                Some(*pos),
                "{}",
                ev.id
            );
        }
        last_id = ev.id;
    }
    drop(stream);

    // Missed while away: resume through the same client library with Last-Event-ID.
    let missed = [
        (
            "room:2",
            Event::from(NotificationAlert::try_from("while away").unwrap()),
        ),
        (
            "room:1",
            Event::from(ChatTyping {
                user: "ada".parse().unwrap(),
                active: false,
            }),
        ),
    ];
    let mut ids = Vec::new();
    for (channel, event) in &missed {
        ids.push(s.rt.channel(channel).emit(event.clone()).await.unwrap());
        tokio::time::sleep(Duration::from_millis(2)).await; // ids across channels in emit order
    }
    let response = reqwest::Client::new()
        .get(&url)
        .header("Last-Event-ID", &last_id)
        .send()
        .await
        .unwrap();
    let mut stream = Box::pin(response.bytes_stream().eventsource());
    for ((channel, event), id) in missed.iter().zip(&ids) {
        let ev = next(&mut stream).await;
        let envelope: Value = serde_json::from_str(&ev.data).unwrap();
        assert_eq!(envelope["id"], id.to_string());
        assert_eq!(envelope["channel"], *channel);
        assert_eq!(
            &Event::decode(&ev.event, envelope["data"].clone())
                .unwrap()
                .unwrap(),
            event
        );
    }
    let ready = next(&mut stream).await;
    assert_eq!(ready.event, "tidings.ready");
    assert_eq!(by_id(&ready.id), format!("room:1={},room:2={}", ids[1], ids[0]));
}

/// A subscriber whose queue (1 entry) overflows is told it lagged, its stream ends, and its
/// cursor resumes exactly. The burst reaches the hub as one batch (emitted without yielding on
/// the memory store, in one MULTI on Redis), so the queue overflows whatever the TCP buffers do.
async fn lagged(b: Backend) {
    let s = start(&b, |mut c| {
        c.limits.subscriber_queue = 1;
        c
    })
    .await;
    let mut sse = SseReader::open(&s.url("/realtime?channel=room:1"), None).await;
    sse.until("tidings.ready").await;
    const BURST: usize = 50;
    match &b {
        Backend::Memory => {
            let room = s.rt.channel("room:1");
            for i in 0..BURST {
                room.emit(ChatMessage {
                    text: format!("burst {i}").parse().unwrap(),
                    user: "ada".parse().unwrap(),
                    reply_to: None,
                    mentions: vec![],
                })
                .now_or_never()
                .expect("the memory store appends without waiting")
                .unwrap();
            }
        }
        Backend::Redis(server) | Backend::RedisXread(server) => {
            let mut conn = server.client().get_multiplexed_async_connection().await.unwrap();
            let mut pipe = ::redis::pipe();
            pipe.atomic();
            for i in 0..BURST {
                pipe.cmd("XADD")
                    .arg("t:room:1")
                    .arg("*")
                    .arg("e")
                    .arg("chat.message")
                    .arg("d")
                    .arg(msg(&format!("burst {i}")).to_string())
                    .ignore();
            }
            pipe.query_async::<()>(&mut conn).await.unwrap();
        }
    }
    let frames = sse.until("tidings.lagged").await;
    let (lagged, delivered) = frames.split_last().unwrap();
    assert!(
        delivered.len() <= 1,
        "at most the queue's worth arrives first: {delivered:?}"
    );
    for (i, f) in delivered.iter().enumerate() {
        assert_eq!(f.json()["data"]["text"], format!("burst {i}"));
    }
    let data = lagged.json();
    assert_eq!(data["cursor"].as_str(), lagged.id.as_deref());
    assert!(data["reason"].as_str().unwrap().contains("fell behind"), "{data}");
    let expected_cursor = match delivered.last() {
        Some(f) => f.id.clone().unwrap(),
        None => "room:1=0-0".to_string(),
    };
    assert_eq!(lagged.id.as_deref(), Some(expected_cursor.as_str()));
    assert!(sse.next().await.is_none(), "the stream ends after tidings.lagged");
    assert_well_formed(&sse.raw);

    let mut resumed = SseReader::open(&s.url("/realtime?channel=room:1"), lagged.id.as_deref()).await;
    let frames = resumed.until("tidings.ready").await;
    let texts: Vec<String> = frames[1..frames.len() - 1]
        .iter()
        .map(|f| f.json()["data"]["text"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = (delivered.len()..BURST).map(|i| format!("burst {i}")).collect();
    assert_eq!(texts, want, "the rest of the burst, exactly once");
}

/// Entries written to Redis by another tool go out as one `data:` line when their data is JSON
/// (pretty-printed or not), and are skipped when it is not.
async fn foreign_multiline_data(b: Backend) {
    let s = start(&b, |c| c).await;
    let server = b.redis_server().expect("a Redis backend");
    let mut conn = server.client().get_multiplexed_async_connection().await.unwrap();
    let xadd = |data: &'static str| {
        let mut cmd = ::redis::cmd("XADD");
        cmd.arg("t:room:1")
            .arg("*")
            .arg("e")
            .arg("chat.message")
            .arg("d")
            .arg(data);
        cmd
    };
    let pretty = "{\n  \"text\": \"hi\",\r\n  \"user\": \"ada\"\n}";
    let _: String = xadd(pretty).query_async(&mut conn).await.unwrap();
    let _: String = xadd("not json\nat all").query_async(&mut conn).await.unwrap();
    let mut sse = SseReader::open(&s.url("/realtime?channel=room:1"), Some("room:1=0-0")).await;
    let frames = sse.until("tidings.ready").await;
    assert_eq!(frames[1].json()["data"], json!({ "text": "hi", "user": "ada" }));
    assert_eq!(
        frames.len(),
        3,
        "the entry whose data is not JSON is skipped: {frames:?}"
    );
    let _: String = xadd("[1,\n2]").query_async(&mut conn).await.unwrap();
    assert_eq!(sse.next().await.unwrap().json()["data"], json!([1, 2]));
    assert_well_formed(&sse.raw);
}
