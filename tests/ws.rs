//! The WebSocket transport, `GET /ws`, driven by tokio-tungstenite: what only a WebSocket has
//! (subscribing and unsubscribing on a live connection, emitting, the message protocol and its
//! errors, per-connection limits, authentication in a first message, the Origin check, close
//! codes). What it shares with SSE (cursors, replay, reset, lagged, expired) is in
//! `tests/protocol.rs`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use tidings::auth::{Action, AuthError, AuthRequest, Authorizer, BoxFuture, Identity};
use tidings::{Config, JwtAuthorizer, MemoryStore, Registry, Tidings};

#[tokio::test]
async fn welcome_subscribe_live_event_and_ping() {
    let s = TestServer::start(std::sync::Arc::new(MemoryStore::default()), |c| c).await;
    let mut ws = WsClient::connect(&s.url(""), "").await;
    let welcome = ws.next().await.unwrap();
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["sub"], serde_json::Value::Null);
    ws.send(json!({"type": "subscribe", "ref": 1, "channels": ["room:1"]}))
        .await;
    let frames = ws.until("ready").await;
    assert_eq!(frames[0]["type"], "subscribed", "{frames:?}");
    assert_eq!(frames[0]["ref"], 1);
    assert_eq!(frames[1]["ref"], 1);
    let id = s.emit_ok("room:1", "chat.message", msg("hi")).await;
    let event = ws.next().await.unwrap();
    assert_eq!(event["type"], "event", "{event}");
    assert_eq!(event["id"], id.as_str());
    assert_eq!(event["data"]["text"], "hi");
    assert!(
        event["cursor"]
            .as_str()
            .unwrap()
            .starts_with(&format!("room:1={id}@")),
        "{event}"
    );
    ws.send(json!({"type": "ping", "ref": "p"})).await;
    assert_eq!(ws.next().await.unwrap(), json!({"type": "pong", "ref": "p"}));
}

// Helpers ----------------------------------------------------------------------------------------

async fn server(tweak: impl FnOnce(Config) -> Config) -> TestServer {
    TestServer::start(Arc::new(MemoryStore::default()), tweak).await
}

fn jwt_config(c: Config) -> Config {
    c.authorizer(JwtAuthorizer::hs256(JWT_SECRET))
        .private_channel("user:{sub}")
}

/// A token for `sub`, valid for ten minutes, with `subscribe` and `publish` patterns.
fn token(sub: &str, subscribe: &[&str], publish: &[&str]) -> String {
    hs256(json!({ "sub": sub, "exp": unix_now() + 600, "subscribe": subscribe, "publish": publish }))
}

/// Connects and reads the welcome.
async fn connect(base: &str, query: &str) -> (WsClient, Value) {
    let mut ws = WsClient::connect(base, query).await;
    let welcome = ws.next().await.expect("welcome");
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (ws, welcome)
}

/// Subscribes `channels` with `reference`; returns what came between `subscribed` and `ready`
/// (replayed events), and `ready`.
async fn subscribe(
    ws: &mut WsClient,
    reference: Value,
    channels: &[&str],
    extra: Value,
) -> (Vec<Value>, Value) {
    let mut m = json!({ "type": "subscribe", "ref": reference, "channels": channels });
    if let Value::Object(extra) = extra {
        m.as_object_mut().unwrap().extend(extra);
    }
    ws.send(m).await;
    let mut frames = ws.until("ready").await;
    let ready = frames.pop().unwrap();
    assert_eq!(
        frames.first(),
        Some(&json!({ "type": "subscribed", "ref": reference, "channels": channels })),
        "{frames:?}"
    );
    assert_eq!(ready["ref"], reference, "{ready}");
    assert_eq!(ready["channels"], json!(channels), "{ready}");
    frames.remove(0);
    (frames, ready)
}

/// Reads the next frame and checks it is an error answering `reference` (`Null`: none) with
/// `status`, `code` and a message naming `mentions`; returns it.
async fn expect_error(
    ws: &mut WsClient,
    reference: Value,
    status: u16,
    code: &str,
    mentions: &[&str],
) -> Value {
    let f = ws.next().await.expect("an error frame, not the end");
    assert_eq!(f["type"], "error", "{f}");
    assert_eq!(f.get("ref").cloned().unwrap_or(Value::Null), reference, "{f}");
    assert_error(f["status"].as_u64().unwrap() as u16, &f, status, code, mentions);
    f
}

/// Sends a ping and expects its pong: the connection is open and in order.
async fn assert_open(ws: &mut WsClient, reference: &str) {
    ws.send(json!({ "type": "ping", "ref": reference })).await;
    assert_eq!(ws.next().await, Some(json!({ "type": "pong", "ref": reference })));
}

/// The next event frame's `(channel, text)`.
async fn next_event(ws: &mut WsClient) -> (String, String) {
    let f = ws.next().await.expect("an event, not the end");
    assert_eq!(f["type"], "event", "{f}");
    (
        f["channel"].as_str().unwrap().to_string(),
        f["data"]["text"].as_str().unwrap().to_string(),
    )
}

/// Expects the server to close now with `code`, after nothing else.
async fn expect_close(ws: &mut WsClient, code: u16) {
    if let Some(f) = ws.next().await {
        panic!("expected close {code}, got {f}");
    }
    assert_eq!(ws.closed.as_ref().map(|c| c.0), Some(code), "{:?}", ws.closed);
}

/// POST /emit with the emit key, from a task that owns only the base URL.
async fn emit_to(base: &str, channel: &str, text: &str) -> String {
    let r = reqwest::Client::new()
        .post(format!("{base}/emit"))
        .bearer_auth(EMIT_KEY)
        .json(&json!({ "channel": channel, "event": "chat.message", "data": msg(text) }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["id"].as_str().unwrap().to_string()
}

async fn history_len(s: &TestServer, channel: &str) -> usize {
    let (status, _, body) = get_json(&s.url(&format!("/history?channel={channel}")), &[]).await;
    assert_eq!(status, 200, "{body}");
    body["entries"].as_array().unwrap().len()
}

// The connection ------------------------------------------------------------------------------

#[tokio::test]
async fn welcome_names_the_connection_its_limits_and_heartbeat() {
    let s = server(|mut c| {
        c.limits.max_channels = 7;
        c.limits.max_payload_bytes = 1024;
        c.limits.ws_messages_per_second = std::num::NonZeroU32::new(9).unwrap();
        c.heartbeat(Duration::from_secs(12))
    })
    .await;
    let (_a, w1) = connect(&s.url(""), "").await;
    let (_b, w2) = connect(&s.url(""), "").await;
    let id = w1["connection"].as_str().unwrap();
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{w1}"
    );
    assert_ne!(w1["connection"], w2["connection"]);
    // The largest message: the largest payload or the longest cursor, with room around it.
    let max = 1024.max(tidings::MAX_CURSOR_LEN) + 16 * 1024;
    assert_eq!(
        w1,
        json!({
            "type": "welcome",
            "connection": id,
            "sub": null,
            "heartbeat_ms": 12000,
            "limits": { "max_channels": 7, "max_message_bytes": max, "messages_per_second": 9 },
        })
    );
}

/// Adding a channel while events flow on another loses and repeats nothing on the other, and the
/// new channel is live from its `ready`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_while_another_channel_flows_loses_nothing() {
    let s = server(|c| c).await;
    let (mut ws, _) = connect(&s.url(""), "").await;
    subscribe(&mut ws, json!(1), &["room:a"], json!({})).await;
    const N: usize = 60;
    let flow = tokio::spawn({
        let base = s.url("");
        async move {
            let mut ids = Vec::new();
            for i in 0..N {
                ids.push(emit_to(&base, "room:a", &format!("a{i}")).await);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            ids
        }
    });
    let mut a_texts = Vec::new();
    let mut b_texts = Vec::new();
    let mut ready_b = None;
    let mut a_after_b = 0;
    while a_texts.len() < 10 {
        a_texts.push(next_event(&mut ws).await.1);
    }
    ws.send(json!({ "type": "subscribe", "ref": "b", "channels": ["room:b"] }))
        .await;
    let mut b_sent = Vec::new();
    while a_texts.len() < N || b_texts.len() < b_sent.len() || ready_b.is_none() {
        let f = ws.next().await.expect("open");
        match f["type"].as_str().unwrap() {
            "event" => {
                let text = f["data"]["text"].as_str().unwrap().to_string();
                match f["channel"].as_str().unwrap() {
                    "room:a" if ready_b.is_some() => {
                        a_after_b += 1;
                        a_texts.push(text)
                    }
                    "room:a" => a_texts.push(text),
                    "room:b" => b_texts.push(text),
                    other => panic!("{other}"),
                }
                if ready_b.is_some() {
                    assert!(f["cursor"].as_str().unwrap().contains("room:b="), "{f}");
                }
            }
            "subscribed" => assert_eq!(
                f,
                json!({ "type": "subscribed", "ref": "b", "channels": ["room:b"] })
            ),
            "ready" => {
                assert_eq!(f["ref"], "b");
                let cursor = f["cursor"].as_str().unwrap();
                assert!(
                    cursor.starts_with("room:a=") && cursor.contains(",room:b=0-0"),
                    "{f}"
                );
                ready_b = Some(f);
                // Live on room:b from here, while room:a still flows.
                for i in 0..5 {
                    let text = format!("b{i}");
                    s.emit_ok("room:b", "chat.message", msg(&text)).await;
                    b_sent.push(text);
                }
            }
            _ => panic!("unexpected {f}"),
        }
    }
    let ids = flow.await.unwrap();
    assert_eq!(ids.len(), N);
    let want: Vec<String> = (0..N).map(|i| format!("a{i}")).collect();
    assert_eq!(
        a_texts, want,
        "room:a: every event once, in order, across the subscribe"
    );
    assert_eq!(b_texts, b_sent, "room:b: live from its ready");
    assert!(a_after_b > 0, "room:a was still flowing when room:b joined");
}

/// A subscribe with a cursor while its channel flows: the replay hands over to live with no
/// gap and no repeat, whatever arrives while it reads. On Redis, where registering, reading the
/// channel's end and replaying are round trips that emits land between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_while_its_channel_flows_hands_over_to_live_exactly() {
    let b = Backend::redis();
    let s = TestServer::start(b.store(tidings::Retention::default(), "h:").await, |c| c).await;
    const N: usize = 300;
    let flow = tokio::spawn({
        let room = s.rt.channel("room:a");
        async move {
            for i in 0..N {
                let m = tidings_test_events::ChatMessage {
                    text: format!("a{i}").parse().unwrap(),
                    user: "ada".parse().unwrap(),
                    reply_to: None,
                    mentions: vec![],
                };
                room.emit(m).await.unwrap();
            }
        }
    });
    // Start while the flow is under way, from a cursor before all of it.
    while history_len(&s, "room:a").await < 30 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (mut ws, _) = connect(&s.url(""), "").await;
    let (replayed, ready) =
        subscribe(&mut ws, json!(1), &["room:a"], json!({ "cursor": "room:a=0-0" })).await;
    let mut texts: Vec<String> = replayed
        .iter()
        .map(|f| f["data"]["text"].as_str().unwrap().to_string())
        .collect();
    let at_ready = texts.len();
    assert!(
        (30..N).contains(&at_ready),
        "the flow was still going at ready: {at_ready}"
    );
    assert_eq!(
        ready["cursor"],
        replayed.last().unwrap()["cursor"],
        "ready holds the cursor of the last replayed event"
    );
    while texts.len() < N {
        texts.push(next_event(&mut ws).await.1);
    }
    flow.await.unwrap();
    let want: Vec<String> = (0..N).map(|i| format!("a{i}")).collect();
    assert_eq!(texts, want, "replay ({at_ready}) then live: each once, in order");
    assert_open(&mut ws, "nothing more").await;
}

#[tokio::test]
async fn unsubscribe_stops_a_channel_and_a_cursor_brings_back_what_it_missed() {
    let s = server(|c| c).await;
    let (mut ws, _) = connect(&s.url(""), "").await;
    subscribe(&mut ws, json!(1), &["room:a", "room:b"], json!({})).await;
    let a1 = s.emit_ok("room:a", "chat.message", msg("a1")).await;
    s.emit_ok("room:b", "chat.message", msg("b1")).await;
    next_event(&mut ws).await;
    let f = ws.next().await.unwrap();
    assert_eq!(f["data"]["text"], "b1", "{f}");
    let with_b = f["cursor"].as_str().unwrap().to_string();

    ws.send(json!({ "type": "unsubscribe", "ref": 2, "channels": ["room:b"] }))
        .await;
    let f = ws.next().await.unwrap();
    let cursor = f["cursor"].as_str().unwrap().to_string();
    assert_eq!(
        f,
        json!({ "type": "unsubscribed", "ref": 2, "channels": ["room:b"], "cursor": cursor })
    );
    assert_eq!(
        by_id(&cursor),
        format!("room:a={a1}"),
        "the cursor no longer names room:b"
    );
    s.emit_ok("room:b", "chat.message", msg("b2")).await;
    s.emit_ok("room:a", "chat.message", msg("a2")).await;
    let f = ws.next().await.unwrap();
    assert_eq!(
        (f["channel"].as_str(), f["data"]["text"].as_str()),
        (Some("room:a"), Some("a2")),
        "{f}"
    );
    assert!(!f["cursor"].as_str().unwrap().contains("room:b"), "{f}");
    // Unsubscribing again, or a channel never subscribed, is refused.
    for channel in ["room:b", "room:zzz"] {
        ws.send(json!({ "type": "unsubscribe", "ref": channel, "channels": [channel] }))
            .await;
        expect_error(&mut ws, json!(channel), 400, "not_subscribed", &[channel]).await;
    }
    // Subscribed again from a cursor that names it, room:b replays what it missed: b2 only
    // (room:a, already subscribed, is left alone though the cursor names it too).
    let (replayed, ready) = subscribe(&mut ws, json!(3), &["room:b"], json!({ "cursor": with_b })).await;
    let texts: Vec<&str> = replayed
        .iter()
        .map(|f| f["data"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["b2"], "{replayed:?}");
    assert!(
        ready["cursor"].as_str().unwrap().starts_with("room:a="),
        "{ready}"
    );
    s.emit_ok("room:b", "chat.message", msg("b3")).await;
    assert_eq!(next_event(&mut ws).await, ("room:b".into(), "b3".into()));
}

#[tokio::test]
async fn an_events_filter_delivers_only_the_named_events() {
    let s = server(|c| c).await;
    let (mut ws, _) = connect(&s.url(""), "").await;
    subscribe(
        &mut ws,
        json!(1),
        &["room:1"],
        json!({ "events": ["notification.alert"] }),
    )
    .await;
    s.emit_ok("room:1", "chat.message", msg("skipped")).await;
    let alert = s.emit_ok("room:1", "notification.alert", json!("shown")).await;
    let f = ws.next().await.unwrap();
    assert_eq!(
        (f["event"].as_str(), f["id"].as_str()),
        (Some("notification.alert"), Some(alert.as_str())),
        "{f}"
    );
    assert_eq!(by_id(f["cursor"].as_str().unwrap()), format!("room:1={alert}"));
}

// Emitting --------------------------------------------------------------------------------------

#[tokio::test]
async fn emit_without_publish_rights_is_refused_with_its_ref() {
    // No authorizer: only the emit key publishes.
    let s = server(|c| c).await;
    let (mut ws, _) = connect(&s.url(""), "").await;
    ws.send(
        json!({ "type": "emit", "ref": 7, "channel": "room:1", "event": "chat.message", "data": msg("x") }),
    )
    .await;
    expect_error(&mut ws, json!(7), 401, "unauthenticated", &["emit key"]).await;
    let (mut ws, _) = connect(&s.url(""), "?token=not-the-key").await;
    ws.send(
        json!({ "type": "emit", "ref": "k", "channel": "room:1", "event": "chat.message", "data": msg("x") }),
    )
    .await;
    expect_error(&mut ws, json!("k"), 401, "unauthenticated", &["emit key"]).await;

    // An authorizer: a token without publish rights for the channel is forbidden; a cookie is
    // enough to read but never to publish (another site's page can open a WebSocket with it).
    let j = server(jwt_config).await;
    let reader = token("ada", &["room:*"], &["news:*"]);
    let (mut ws, _) = connect(&j.url(""), &format!("?token={reader}")).await;
    ws.send(
        json!({ "type": "emit", "ref": 1, "channel": "room:1", "event": "chat.message", "data": msg("x") }),
    )
    .await;
    expect_error(&mut ws, json!(1), 403, "forbidden", &["room:1"]).await;
    let publisher = token("ada", &["room:*"], &["room:*"]);
    let cookie = format!("tidings_token={publisher}");
    let mut ws = WsClient::try_connect(&j.url(""), "", &[("cookie", &cookie)])
        .await
        .unwrap();
    assert_eq!(ws.next().await.unwrap()["sub"], "ada", "the cookie reads");
    ws.send(
        json!({ "type": "emit", "ref": 2, "channel": "room:1", "event": "chat.message", "data": msg("x") }),
    )
    .await;
    expect_error(&mut ws, json!(2), 401, "unauthenticated", &["no credential"]).await;
    assert_open(&mut ws, "still").await;
    assert_eq!(history_len(&s, "room:1").await, 0);
    let held =
        j.rt.channel("room:1")
            .history(tidings::Range::Latest, 10)
            .await
            .unwrap();
    assert!(held.is_empty(), "nothing was stored: {held:?}");
}

#[tokio::test]
async fn emit_with_the_emit_key_or_a_publishing_token_is_stored_and_delivered() {
    let s = server(|c| c).await;
    let (mut reader, _) = connect(&s.url(""), "").await;
    subscribe(&mut reader, json!(1), &["room:1"], json!({})).await;
    let (mut ws, _) = connect(&s.url(""), &format!("?token={EMIT_KEY}")).await;
    let emit = json!({ "type": "emit", "ref": "e", "channel": "room:1", "event": "chat.message",
                       "data": msg("over ws"), "idempotency_key": "k-1" });
    ws.send(emit.clone()).await;
    let f = ws.next().await.unwrap();
    let id = f["id"].as_str().unwrap().to_string();
    assert_eq!(
        f,
        json!({ "type": "emitted", "ref": "e", "id": id, "duplicate": false })
    );
    let event = reader.next().await.unwrap();
    assert_eq!(
        (event["id"].as_str(), &event["data"]),
        (Some(id.as_str()), &msg("over ws"))
    );
    // The same idempotency key again: the same id, stored once.
    ws.send(emit).await;
    assert_eq!(
        ws.next().await.unwrap(),
        json!({ "type": "emitted", "ref": "e", "id": id, "duplicate": true })
    );
    assert_eq!(history_len(&s, "room:1").await, 1);

    // A token with publish rights, given in the Authorization header or in a first message.
    let j = server(jwt_config).await;
    let (mut reader, _) = connect(&j.url(""), &format!("?token={}", token("bob", &["room:*"], &[]))).await;
    subscribe(&mut reader, json!(1), &["room:2"], json!({})).await;
    let publisher = token("ada", &[], &["room:*"]);
    let bearer = format!("Bearer {publisher}");
    let by_header = WsClient::try_connect(&j.url(""), "", &[("authorization", &bearer)])
        .await
        .unwrap();
    let mut by_message = WsClient::connect(&j.url(""), "").await;
    by_message
        .send(json!({ "type": "auth", "token": publisher }))
        .await;
    for (i, mut ws) in [by_header, by_message].into_iter().enumerate() {
        assert_eq!(ws.next().await.unwrap()["sub"], "ada");
        let text = format!("from ada {i}");
        ws.send(json!({ "type": "emit", "ref": i, "channel": "room:2", "event": "chat.message", "data": msg(&text) }))
            .await;
        let f = ws.next().await.unwrap();
        assert_eq!(
            (f["type"].as_str(), f["ref"].as_u64()),
            (Some("emitted"), Some(i as u64)),
            "{f}"
        );
        let event = reader.next().await.unwrap();
        assert_eq!(event["id"], f["id"]);
        assert_eq!(event["data"]["text"], text.as_str());
    }
}

#[tokio::test]
async fn emit_errors_are_the_bodies_post_emit_answers() {
    let s = server(|c| c).await;
    let (mut ws, _) = connect(&s.url(""), &format!("?token={EMIT_KEY}")).await;
    let emit = |reference: u32, channel: &str, event: &str, data: Value| json!({ "type": "emit", "ref": reference, "channel": channel, "event": event, "data": data });
    ws.send(emit(
        1,
        "room:1",
        "chat.message",
        json!({ "text": 5, "user": "" }),
    ))
    .await;
    let f = expect_error(&mut ws, json!(1), 422, "invalid_payload", &["chat.message"]).await;
    assert_eq!(f["event"], "chat.message");
    let mut pointers: Vec<&str> = f["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("errors in {f}"))
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    pointers.sort();
    assert_eq!(pointers, ["/data/text", "/data/user"], "{f}");
    // The same body as POST /emit gives.
    let (status, body) = s
        .emit("room:1", "chat.message", json!({ "text": 5, "user": "" }))
        .await;
    let mut frame = f.as_object().unwrap().clone();
    frame.remove("type");
    frame.remove("ref");
    assert_eq!(frame.remove("status"), Some(json!(status)));
    assert_eq!(Value::Object(frame), body);

    ws.send(emit(2, "room:1", "chat.nope", msg("x"))).await;
    expect_error(&mut ws, json!(2), 422, "unknown_event", &["chat.nope"]).await;
    ws.send(emit(3, "bad channel", "chat.message", msg("x"))).await;
    expect_error(&mut ws, json!(3), 400, "invalid_channel", &[]).await;
    ws.send(json!({ "type": "emit", "ref": 4, "channel": "room:1", "event": "chat.message" }))
        .await;
    expect_error(&mut ws, json!(4), 400, "invalid_message", &["data"]).await;
    ws.send(json!({ "type": "emit", "ref": 5, "channel": "room:1", "event": "chat.message", "data": msg("x"), "extra": 1 }))
        .await;
    expect_error(&mut ws, json!(5), 400, "invalid_message", &["extra"]).await;
    assert_eq!(history_len(&s, "room:1").await, 0, "nothing was stored");
    assert_open(&mut ws, "after").await;
}

// The message protocol -------------------------------------------------------------------------

#[tokio::test]
async fn malformed_messages_get_invalid_message_and_the_connection_stays_open() {
    let s = server(|c| c).await;
    let (mut ws, _) = connect(&s.url(""), "").await;
    let long_ref = "r".repeat(200);
    // (raw text, the ref the error answers, words its message must hold)
    let cases: Vec<(String, Value, Vec<&str>)> = vec![
        ("hello".into(), Value::Null, vec!["not JSON"]),
        ("[1,2]".into(), Value::Null, vec!["JSON object"]),
        ("\"subscribe\"".into(), Value::Null, vec!["JSON object"]),
        (r#"{"ref":5}"#.into(), json!(5), vec!["needs a type"]),
        (r#"{"type":7,"ref":"t"}"#.into(), json!("t"), vec!["needs a type"]),
        (
            r#"{"type":"dance","ref":6}"#.into(),
            json!(6),
            vec!["unknown type", "dance", "subscribe"],
        ),
        (r#"{"type":"ping","ref":8,"x":1}"#.into(), json!(8), vec!["x"]),
        (
            r#"{"type":"subscribe","ref":9,"channels":["room:1"],"from":"x"}"#.into(),
            json!(9),
            vec!["from"],
        ),
        (
            r#"{"type":"subscribe","ref":10}"#.into(),
            json!(10),
            vec!["channels"],
        ),
        (
            r#"{"type":"subscribe","ref":11,"channels":"room:1"}"#.into(),
            json!(11),
            vec!["channels"],
        ),
        (
            r#"{"type":"unsubscribe","ref":12,"channels":["room:1"],"cursor":""}"#.into(),
            json!(12),
            vec!["cursor"],
        ),
        (
            r#"{"type":"ping","ref":{"a":1}}"#.into(),
            Value::Null,
            vec!["ref must be a string or a number"],
        ),
        (
            format!(r#"{{"type":"ping","ref":"{long_ref}"}}"#),
            Value::Null,
            vec!["longer than 128"],
        ),
    ];
    for (text, reference, mentions) in &cases {
        ws.send_text(text).await;
        let f = expect_error(&mut ws, reference.clone(), 400, "invalid_message", mentions).await;
        assert!(f["message"].as_str().unwrap().len() < 400, "{f}");
    }
    {
        use futures_util::SinkExt as _;
        ws.ws
            .send(tokio_tungstenite::tungstenite::Message::binary(
                b"{\"type\":\"ping\"}".to_vec(),
            ))
            .await
            .unwrap();
    }
    expect_error(&mut ws, Value::Null, 400, "invalid_message", &["binary"]).await;
    // Numbers and strings are both refs, echoed as sent.
    ws.send_text(r#"{"type":"ping","ref":1.5}"#).await;
    assert_eq!(ws.next().await, Some(json!({ "type": "pong", "ref": 1.5 })));
    ws.send_text(r#"{"type":"ping"}"#).await;
    assert_eq!(ws.next().await, Some(json!({ "type": "pong" })));
    // Nothing of the above subscribed anything: room:1 is free to subscribe.
    subscribe(&mut ws, json!("ok"), &["room:1"], json!({})).await;
    // Without an authorizer, the connection is authenticated (anonymously) already.
    ws.send(json!({ "type": "auth", "ref": "a", "token": "x" })).await;
    expect_error(&mut ws, json!("a"), 400, "already_authenticated", &[]).await;
    assert_open(&mut ws, "end").await;
}

#[tokio::test]
async fn a_refused_subscribe_names_the_problem_and_subscribes_nothing() {
    let s = server(|c| c).await;
    let (mut ws, _) = connect(&s.url(""), "").await;
    let cases: Vec<(Value, u16, &str, Vec<&str>)> = vec![
        (
            json!({ "channels": ["room:1"], "events": ["chat.nope"] }),
            400,
            "unknown_event",
            vec!["chat.nope", "chat.message"],
        ),
        (
            json!({ "channels": ["room:1"], "cursor": "nonsense" }),
            400,
            "invalid_cursor",
            vec!["nonsense"],
        ),
        (
            json!({ "channels": ["room:1"], "cursor": "room:1=abc" }),
            400,
            "invalid_cursor",
            vec![],
        ),
        (
            json!({ "channels": ["room:1", "bad name"] }),
            400,
            "invalid_channel",
            vec![],
        ),
        (
            json!({ "channels": [] }),
            400,
            "invalid_channel",
            vec!["no channel"],
        ),
    ];
    for (i, (body, status, code, mentions)) in cases.into_iter().enumerate() {
        let mut m = json!({ "type": "subscribe", "ref": i });
        m.as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        ws.send(m).await;
        expect_error(&mut ws, json!(i), status, code, &mentions).await;
    }
    // None of them subscribed room:1 (or anything): it subscribes now, and only once.
    subscribe(&mut ws, json!("a"), &["room:1"], json!({})).await;
    ws.send(json!({ "type": "subscribe", "ref": "b", "channels": ["room:2", "room:1"] }))
        .await;
    expect_error(&mut ws, json!("b"), 400, "already_subscribed", &["room:1"]).await;
    // room:2, refused with it, was not subscribed either.
    s.emit_ok("room:2", "chat.message", msg("not for us")).await;
    s.emit_ok("room:1", "chat.message", msg("for us")).await;
    assert_eq!(next_event(&mut ws).await, ("room:1".into(), "for us".into()));
}

// Limits ----------------------------------------------------------------------------------------

#[tokio::test]
async fn too_many_channels_counts_every_subscribe_of_the_connection() {
    let s = server(|mut c| {
        c.limits.max_channels = 3;
        c
    })
    .await;
    let (mut ws, _) = connect(&s.url(""), "").await;
    subscribe(&mut ws, json!(1), &["room:a", "room:b"], json!({})).await;
    ws.send(json!({ "type": "subscribe", "ref": 2, "channels": ["room:c", "room:d"] }))
        .await;
    let f = expect_error(&mut ws, json!(2), 400, "too_many_channels", &["at most 3"]).await;
    assert_eq!(f["limit"], 3);
    subscribe(&mut ws, json!(3), &["room:c"], json!({})).await;
    ws.send(json!({ "type": "subscribe", "ref": 4, "channels": ["room:d"] }))
        .await;
    expect_error(&mut ws, json!(4), 400, "too_many_channels", &[]).await;
    // Leaving one makes room for another.
    ws.send(json!({ "type": "unsubscribe", "ref": 5, "channels": ["room:a"] }))
        .await;
    assert_eq!(ws.next().await.unwrap()["type"], "unsubscribed");
    subscribe(&mut ws, json!(6), &["room:d"], json!({})).await;
}

#[tokio::test]
async fn messages_beyond_the_rate_are_refused_and_a_flood_closes_4008() {
    let s = server(|mut c| {
        c.limits.ws_messages_per_second = std::num::NonZeroU32::new(5).unwrap();
        c
    })
    .await;
    let (mut ws, _) = connect(&s.url(""), "").await;
    for i in 0..8 {
        ws.send(json!({ "type": "ping", "ref": i })).await;
    }
    for i in 0..5 {
        assert_eq!(
            ws.next().await,
            Some(json!({ "type": "pong", "ref": i })),
            "a burst of one second's worth"
        );
    }
    for _ in 5..8 {
        let f = expect_error(
            &mut ws,
            Value::Null,
            429,
            "rate_limited",
            &["5 messages per second"],
        )
        .await;
        assert_eq!(f["limit"], 5);
    }
    // The rate refills: one more message is allowed after 1/5 s.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_open(&mut ws, "later").await;

    // A flood far beyond: refused while at most twice the rate, then closed.
    let (mut ws, _) = connect(&s.url(""), "").await;
    for i in 0..200 {
        ws.send(json!({ "type": "ping", "ref": i })).await;
    }
    let mut frames = Vec::new();
    while let Some(f) = ws.next().await {
        frames.push(f["type"].as_str().unwrap().to_string());
    }
    assert_eq!(ws.closed.as_ref().map(|c| c.0), Some(4008), "{:?}", ws.closed);
    assert!(frames.len() < 30, "closed early in the flood: {frames:?}");
    let refused_in_a_row = frames.iter().rev().take_while(|t| *t == "error").count();
    assert_eq!(
        refused_in_a_row, 5,
        "closed at the sixth refusal in a row: {frames:?}"
    );
    assert!(frames.iter().filter(|t| *t == "pong").count() >= 5, "{frames:?}");
}

/// Binary messages are messages too: refused beyond the rate, and a flood of them closes.
#[tokio::test]
async fn a_flood_of_binary_messages_closes_4008_too() {
    use futures_util::SinkExt as _;
    let s = server(|mut c| {
        c.limits.ws_messages_per_second = std::num::NonZeroU32::new(5).unwrap();
        c
    })
    .await;
    let (mut ws, _) = connect(&s.url(""), "").await;
    for _ in 0..200 {
        ws.ws
            .send(tokio_tungstenite::tungstenite::Message::binary(b"x".to_vec()))
            .await
            .unwrap();
    }
    let mut codes = Vec::new();
    while let Some(f) = ws.next().await {
        codes.push(f["error"].as_str().unwrap().to_string());
    }
    assert_eq!(ws.closed.as_ref().map(|c| c.0), Some(4008), "{codes:?}");
    assert_eq!(
        codes.iter().filter(|c| *c == "invalid_message").count(),
        5,
        "{codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| *c == "rate_limited").count(),
        5,
        "{codes:?}"
    );
}

/// Connections per identity are counted once authenticated (1013, try again later); the node's
/// limit refuses the upgrade itself (503).
#[tokio::test]
async fn connection_limits_per_identity_and_per_node() {
    let s = server(|mut c| {
        c.limits.max_connections_per_identity = 1;
        jwt_config(c)
    })
    .await;
    let ada = token("ada", &["room:*"], &[]);
    let (first, _) = connect(&s.url(""), &format!("?token={ada}")).await;
    let mut second = WsClient::connect(&s.url(""), &format!("?token={ada}")).await;
    let f = expect_error(&mut second, Value::Null, 429, "too_many_connections", &[]).await;
    assert_eq!(f["limit"], 1);
    expect_close(&mut second, 1013).await;
    let (_bob, w) = connect(&s.url(""), &format!("?token={}", token("bob", &["room:*"], &[]))).await;
    assert_eq!(w["sub"], "bob", "another identity has its own count");
    drop(first);
    // The slot is free once the server saw the first one go.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut ws = WsClient::connect(&s.url(""), &format!("?token={ada}")).await;
        if ws.next().await.unwrap()["type"] == "welcome" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the slot was not freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let s = server(|mut c| {
        c.limits.max_connections = 1;
        c
    })
    .await;
    let (_only, _) = connect(&s.url(""), "").await;
    let (status, body) = WsClient::try_connect(&s.url(""), "", &[]).await.err().unwrap();
    assert_error(status, &body, 503, "node_full", &[]);

    // A socket still waiting to send its `auth` message holds its slot too.
    let s = server(|mut c| {
        c.limits.max_connections = 1;
        jwt_config(c)
    })
    .await;
    let waiting = WsClient::connect(&s.url(""), "").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match WsClient::try_connect(&s.url(""), "", &[]).await {
            Err((status, body)) => {
                assert_error(status, &body, 503, "node_full", &[]);
                break;
            }
            Ok(_) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the waiting socket holds no slot"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    drop(waiting);
}

#[tokio::test]
async fn a_message_over_the_limit_closes_1009() {
    let s = server(|mut c| {
        c.limits.max_payload_bytes = 1024;
        c
    })
    .await;
    let (mut ws, welcome) = connect(&s.url(""), "").await;
    let max = welcome["limits"]["max_message_bytes"].as_u64().unwrap() as usize;
    assert_eq!(max, tidings::MAX_CURSOR_LEN + 16 * 1024);
    // Just within the limit: read, and refused for what it says.
    let within = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(max - 24));
    assert_eq!(within.len(), max);
    ws.send_text(&within).await;
    expect_error(&mut ws, Value::Null, 400, "invalid_message", &["pad"]).await;
    // One byte more: the connection closes.
    let over = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(max - 23));
    ws.send_text(&over).await;
    expect_close(&mut ws, 1009).await;
    assert!(
        ws.closed.as_ref().unwrap().1.contains(&max.to_string()),
        "{:?}",
        ws.closed
    );
}

// Authentication ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_token_in_the_query_or_header_names_the_sub_and_a_bad_one_closes_4001() {
    let s = server(jwt_config).await;
    let good = token("ada", &["room:*"], &[]);
    let (mut ws, welcome) = connect(&s.url(""), &format!("?token={good}")).await;
    assert_eq!(welcome["sub"], "ada");
    subscribe(&mut ws, json!(1), &["room:1"], json!({})).await;
    let bearer = format!("Bearer {good}");
    let mut ws = WsClient::try_connect(&s.url(""), "", &[("authorization", &bearer)])
        .await
        .unwrap();
    assert_eq!(ws.next().await.unwrap()["sub"], "ada");

    let expired = hs256(json!({ "sub": "ada", "exp": unix_now() - 5, "subscribe": ["room:*"] }));
    let wrong_key = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "sub": "ada", "exp": unix_now() + 600 }),
        &jsonwebtoken::EncodingKey::from_secret(b"another secret entirely, long enough"),
    )
    .unwrap();
    for (query, headers, mentions) in [
        ("?token=garbage".to_string(), vec![], "invalid token"),
        (format!("?token={expired}"), vec![], "token expired"),
        (
            String::new(),
            vec![("authorization", format!("Bearer {wrong_key}"))],
            "bad signature",
        ),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut ws = WsClient::try_connect(&s.url(""), &query, &headers)
            .await
            .expect("the upgrade succeeds; authentication is refused after it");
        expect_error(&mut ws, Value::Null, 401, "unauthenticated", &[mentions]).await;
        expect_close(&mut ws, 4001).await;
    }
}

#[tokio::test]
async fn without_a_credential_the_first_message_authenticates() {
    let s = server(|mut c| {
        c.limits.head_timeout = Duration::from_millis(300);
        jwt_config(c)
    })
    .await;
    let good = token("ada", &["room:*"], &[]);
    let mut ws = WsClient::connect(&s.url(""), "").await;
    ws.send(json!({ "type": "auth", "ref": 1, "token": good })).await;
    let welcome = ws.next().await.unwrap();
    assert_eq!(
        (welcome["type"].as_str(), welcome["sub"].as_str()),
        (Some("welcome"), Some("ada")),
        "{welcome}"
    );
    subscribe(&mut ws, json!(2), &["room:1"], json!({})).await;
    ws.send(json!({ "type": "auth", "ref": 3, "token": good })).await;
    expect_error(&mut ws, json!(3), 400, "already_authenticated", &[]).await;

    // A stale cookie does not stand in the way: the page sends a fresh token first.
    let stale = hs256(json!({ "sub": "old", "exp": unix_now() - 5, "subscribe": ["room:*"] }));
    let cookie = format!("tidings_token={stale}");
    let mut ws = WsClient::try_connect(&s.url(""), "", &[("cookie", &cookie)])
        .await
        .unwrap();
    ws.send(json!({ "type": "auth", "token": good })).await;
    assert_eq!(ws.next().await.unwrap()["sub"], "ada");

    // Anything else first, a bad token, or silence: an error, then 4001.
    let cases = [
        Some(json!({ "type": "subscribe", "channels": ["room:1"] }).to_string()),
        Some("not json".to_string()),
        Some(json!({ "type": "auth", "token": good, "x": 1 }).to_string()),
        Some(json!({ "type": "auth", "token": "garbage" }).to_string()),
        None,
    ];
    for first in cases {
        let mut ws = WsClient::connect(&s.url(""), "").await;
        let mentions = match &first {
            Some(text) => {
                ws.send_text(text).await;
                if text.contains("garbage") {
                    "invalid token"
                } else {
                    "first message must be"
                }
            }
            None => "no credential within",
        };
        expect_error(&mut ws, Value::Null, 401, "unauthenticated", &[mentions]).await;
        expect_close(&mut ws, 4001).await;
    }
}

/// A hook of one's own: `x-gate: banned` is forbidden, `x-gate: broken` makes it fail.
struct Gate;

impl Authorizer for Gate {
    fn authorize<'a>(
        &'a self,
        req: &'a AuthRequest,
        _action: Action<'a>,
    ) -> BoxFuture<'a, Result<Identity, AuthError>> {
        Box::pin(async move {
            match req.headers.get("x-gate").and_then(|v| v.to_str().ok()) {
                Some("banned") => Err(AuthError::Forbidden("banned from here".into())),
                Some("broken") => Err(AuthError::Failed("the hook's backend at 10.0.0.7 is down".into())),
                _ => Ok(Identity::user("ada")),
            }
        })
    }
}

#[tokio::test]
async fn a_hook_that_forbids_closes_4003_and_one_that_fails_closes_1011() {
    let s = server(|c| c.authorizer(Gate)).await;
    let mut ws = WsClient::try_connect(&s.url(""), "", &[("x-gate", "banned")])
        .await
        .unwrap();
    expect_error(&mut ws, Value::Null, 403, "forbidden", &["banned from here"]).await;
    expect_close(&mut ws, 4003).await;
    let mut ws = WsClient::try_connect(&s.url(""), "", &[("x-gate", "broken")])
        .await
        .unwrap();
    let f = expect_error(&mut ws, Value::Null, 500, "authorizer_failed", &[]).await;
    assert!(!f.to_string().contains("10.0.0.7"), "nothing internal: {f}");
    expect_close(&mut ws, 1011).await;
    let (_, welcome) = connect(&s.url(""), "").await;
    assert_eq!(welcome["sub"], "ada");
}

#[tokio::test]
async fn private_channels_and_subscribe_rights_are_checked_per_subscribe() {
    let s = server(jwt_config).await;
    let ada = token("ada", &["room:*", "user:*"], &[]);
    let (mut ws, _) = connect(&s.url(""), &format!("?token={ada}")).await;
    ws.send(json!({ "type": "subscribe", "ref": 1, "channels": ["user:bob"] }))
        .await;
    expect_error(&mut ws, json!(1), 403, "forbidden", &["private"]).await;
    ws.send(json!({ "type": "subscribe", "ref": 2, "channels": ["news:1"] }))
        .await;
    expect_error(&mut ws, json!(2), 403, "forbidden", &["news:1"]).await;
    subscribe(&mut ws, json!(3), &["user:ada", "room:1"], json!({})).await;
    s.emit_ok("user:ada", "chat.message", msg("just for ada")).await;
    assert_eq!(
        next_event(&mut ws).await,
        ("user:ada".into(), "just for ada".into())
    );
}

// The upgrade -----------------------------------------------------------------------------------

#[tokio::test]
async fn the_upgrade_checks_query_origin_and_protocol() {
    let s = server(|c| c.cors_origin("https://app.example")).await;
    let base = s.url("");
    let (status, body) = WsClient::try_connect(&base, "?channel=room:1", &[])
        .await
        .err()
        .unwrap();
    assert_error(status, &body, 400, "invalid_query", &["channel", "token"]);
    let (status, body) = WsClient::try_connect(&base, "", &[("origin", "https://evil.example")])
        .await
        .err()
        .unwrap();
    assert_error(status, &body, 403, "forbidden_origin", &["evil.example"]);
    // A page of this host, or a listed origin, may.
    let same = format!("http://{}", s.addr);
    for origin in [same.as_str(), "https://app.example"] {
        let mut ws = WsClient::try_connect(&base, "", &[("origin", origin)])
            .await
            .unwrap_or_else(|e| panic!("{origin}: {e:?}"));
        assert_eq!(ws.next().await.unwrap()["type"], "welcome");
    }
    // Another port of the same host is another origin.
    let other_port = format!("http://{}:{}", s.addr.ip(), s.addr.port() + 1);
    let (status, _) = WsClient::try_connect(&base, "", &[("origin", &other_port)])
        .await
        .err()
        .unwrap();
    assert_eq!(status, 403);
    let (status, _, body) = get_json(&s.url("/ws"), &[]).await;
    assert_error(status, &body, 400, "not_websocket", &["/realtime"]);
}

async fn live_event_over(base: &str) {
    let (mut ws, _) = connect(base, "").await;
    subscribe(&mut ws, json!(1), &["room:1"], json!({})).await;
    let id = emit_to(base, "room:1", "hi").await;
    let f = ws.next().await.unwrap();
    assert_eq!(
        (f["type"].as_str(), f["id"].as_str()),
        (Some("event"), Some(id.as_str())),
        "{f}"
    );
}

#[tokio::test]
async fn the_router_serves_ws_on_its_own_and_nested() {
    live_event_over(&hyper_server(|c| c).await).await;
    let config = Config::default().schema(schema_path()).emit_key(EMIT_KEY);
    let registry = Registry::load(&config.schema).unwrap();
    let rt = Tidings::new(registry, Arc::new(MemoryStore::default()), config);
    let app = axum::Router::new().nest("/rt", tidings::router(rt));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    live_event_over(&format!("http://{addr}/rt")).await;
}

#[tokio::test]
async fn shutdown_closes_1001_and_the_last_cursor_resumes() {
    let store: Arc<dyn tidings::Store> = Arc::new(MemoryStore::default());
    let s = TestServer::start(store.clone(), |c| c).await;
    let (mut ws, _) = connect(&s.url(""), "").await;
    subscribe(&mut ws, json!(1), &["room:1"], json!({})).await;
    s.emit_ok("room:1", "chat.message", msg("before")).await;
    let last = ws.next().await.unwrap()["cursor"].as_str().unwrap().to_string();
    s.rt.close();
    let mut before_close = Vec::new();
    while let Some(f) = ws.next().await {
        before_close.push(f);
    }
    assert_eq!(ws.closed.as_ref().map(|c| c.0), Some(1001), "{:?}", ws.closed);
    // As an SSE stream at shutdown: it just ends; the cursor the client holds resumes.
    assert!(before_close.is_empty(), "nothing but the close: {before_close:?}");
    let other = TestServer::start(store, |c| c).await;
    other.emit_ok("room:1", "chat.message", msg("after")).await;
    let (mut ws, _) = connect(&other.url(""), "").await;
    let (replayed, _) = subscribe(&mut ws, json!(1), &["room:1"], json!({ "cursor": last })).await;
    let texts: Vec<&str> = replayed
        .iter()
        .map(|f| f["data"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["after"]);
}

// The binary ------------------------------------------------------------------------------------

/// A WebSocket client that opens the connection by hand and then neither reads nor writes: not
/// even its kernel's buffers answer a ping. Returns the frames the server wrote until it closed
/// the socket, read after `wait`: `(opcode, payload)`.
async fn silent_peer(addr: &str, wait: Duration) -> Vec<(u8, Vec<u8>)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(wait).await;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut raw))
        .await
        .expect("the server closed the socket")
        .unwrap();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    assert!(
        raw.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&raw[..end])
    );
    // Server frames are unmasked: opcode, length (7 bits, or 126 and 16 bits), payload.
    let (mut frames, mut i) = (Vec::new(), end);
    while i < raw.len() {
        let opcode = raw[i] & 0x0f;
        let (len, at) = match raw[i + 1] & 0x7f {
            126 => (u16::from_be_bytes([raw[i + 2], raw[i + 3]]) as usize, i + 4),
            127 => panic!("no frame here is that long"),
            n => (n as usize, i + 2),
        };
        frames.push((opcode, raw[at..at + len].to_vec()));
        i = at + len;
    }
    frames
}

/// The standalone binary serves `/ws`; with `--heartbeat 1`, a peer that answers nothing (not
/// even the protocol pings its WebSocket would answer by itself) is closed with 4009 after two
/// heartbeats and a second, while one that reads, and so answers them, stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_ws_and_closes_a_silent_peer_4009() {
    let bin = Spawn::new().args(&["--heartbeat", "1"]).start().await;
    let base = bin.url("");
    let (mut alive, welcome) = connect(&base, "").await;
    assert_eq!(welcome["heartbeat_ms"], 1000);
    subscribe(&mut alive, json!(1), &["room:1"], json!({})).await;
    let id = emit_to(&base, "room:1", "hi").await;
    assert_eq!(alive.next().await.unwrap()["id"], id.as_str());

    let reading = async {
        // Reading answers the server's protocol pings; `next` skips the `ping` frames.
        let quiet = tokio::time::timeout(Duration::from_millis(4500), alive.next()).await;
        assert!(quiet.is_err(), "nothing but heartbeats: {quiet:?}");
    };
    let (_, frames) = tokio::join!(reading, silent_peer(&bin.addr, Duration::from_millis(4500)));
    assert!(
        alive.pings >= 3,
        "a ping frame every quiet second: {}",
        alive.pings
    );
    assert_open(&mut alive, "alive").await;

    let (close, before) = frames.split_last().expect("frames");
    assert_eq!(close.0, 0x8, "the last frame closes: {frames:?}");
    assert_eq!(
        u16::from_be_bytes([close.1[0], close.1[1]]),
        4009,
        "{:?}",
        String::from_utf8_lossy(&close.1)
    );
    let pings = before.iter().filter(|f| f.0 == 0x9).count();
    assert!(
        pings >= 2,
        "closed after two heartbeats without an answer, not before: {frames:?}"
    );
    let texts: Vec<Value> = before
        .iter()
        .filter(|f| f.0 == 0x1)
        .map(|f| serde_json::from_slice(&f.1).unwrap())
        .collect();
    assert_eq!(texts[0]["type"], "welcome");
    assert!(
        texts[1..].iter().all(|t| *t == json!({ "type": "ping" })),
        "{texts:?}"
    );
}
