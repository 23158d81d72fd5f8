//! `POST /emit`, `GET /history`, `GET /health`, the 404 fallback, and the typed Rust emit API,
//! on both stores.
//!
//! Every refusal is checked twice: the 4xx JSON body names what was wrong, and nothing was
//! written (the history is unchanged and, on Redis, no key was created).

#[macro_use]
mod support;

use std::collections::BTreeSet;

use serde_json::{json, Value};
use support::{
    assert_error, by_id, msg, post_emit_raw, redis_keys, Backend, SseReader, TestServer, EMIT_KEY,
};
use tidings::schema::ValidateError;
use tidings::{ChannelError, Config, EmitError, Emittable, Range, Retention, StreamId};
use tidings_test_events::{Availability, ChatMessage, Event, PresenceStatus};

on_both_backends!(
    valid_emits_of_every_demo_event,
    invalid_payloads_list_every_failing_pointer_and_write_nothing,
    unknown_event_is_422_and_writes_nothing,
    malformed_bodies_are_400,
    bad_channels_are_400,
    missing_or_wrong_key_is_401,
    oversize_payloads_are_413_naming_the_limit,
    history_pages_latest_after_and_before,
    history_caps_the_limit_and_rejects_bad_parameters,
    health_names_the_store,
    unknown_routes_are_404_json,
    typed_api_emits_validates_and_delivers,
    an_idempotency_key_stores_an_emit_once,
    history_defaults_to_100_entries_and_caps_at_1000,
    get_schema_is_the_loaded_schema_document,
    history_after_a_position_from_another_epoch_says_reset,
);

/// On a channel holding more than 1,000 entries: no `limit` gives the newest 100, and any larger
/// `limit` is capped to 1,000 (the defaults of `max_history`).
async fn history_defaults_to_100_entries_and_caps_at_1000(b: Backend) {
    let retention = Retention::default().max_len(2000);
    let s = TestServer::start(b.store(retention.clone(), "t:").await, |c| c.retention(retention)).await;
    let room = s.rt.channel("room:1");
    for i in 1..=1200 {
        let alert: tidings_test_events::NotificationAlert = format!("a{i}").parse().unwrap();
        room.emit(alert).await.unwrap();
    }
    let data = |page: Vec<Value>| -> Vec<String> {
        page.iter()
            .map(|e| e["data"].as_str().unwrap().to_string())
            .collect()
    };
    let want = |r: std::ops::RangeInclusive<i32>| -> Vec<String> { r.map(|i| format!("a{i}")).collect() };
    assert_eq!(data(history_page(&s, "channel=room:1").await), want(1101..=1200));
    assert_eq!(
        data(history_page(&s, "channel=room:1&limit=5000").await),
        want(201..=1200)
    );
    assert_eq!(
        data(history_page(&s, "channel=room:1&after=0-0&limit=1000000").await),
        want(1..=1000)
    );
}

async fn get_schema_is_the_loaded_schema_document(b: Backend) {
    let s = start(&b, |c| c).await;
    let (status, body) = get(&s.url("/schema")).await;
    assert_eq!(status, 200, "{body}");
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(tidings_test_events::SCHEMA_PATH).unwrap()).unwrap();
    assert_eq!(body, file, "the schema file the server loaded, as JSON");
}

/// POST /emit with an `Idempotency-Key`; returns (status, body).
async fn emit_keyed(s: &TestServer, key: &[u8], text: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(s.url("/emit"))
        .bearer_auth(EMIT_KEY)
        .header(
            "Idempotency-Key",
            reqwest::header::HeaderValue::from_bytes(key).unwrap(),
        )
        .json(&json!({ "channel": "room:1", "event": "chat.message", "data": msg(text) }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn an_idempotency_key_stores_an_emit_once(b: Backend) {
    let s = start(&b, |c| c).await;
    let (status, first) = emit_keyed(&s, b"order-42-paid", "paid").await;
    assert_eq!((status, &first["duplicate"]), (200, &json!(false)), "{first}");
    let (status, retry) = emit_keyed(&s, b"order-42-paid", "paid").await;
    assert_eq!(status, 200, "{retry}");
    assert_eq!((&retry["id"], &retry["duplicate"]), (&first["id"], &json!(true)));
    let (_, other) = emit_keyed(&s, b"order-43-paid", "paid").await;
    assert_eq!(other["duplicate"], false);
    let texts: Vec<Value> = history(&s, "room:1")
        .await
        .iter()
        .map(|e| e["data"]["text"].clone())
        .collect();
    assert_eq!(texts, [json!("paid"), json!("paid")], "the retry stored nothing");
    for (bad, why) in [
        (&b""[..], "is empty"),
        (&[b'k'; 256][..], "256 bytes"),
        (b"a key", "' '"),
        (b"caf\xc3\xa9", "visible ASCII"),
    ] {
        let (status, body) = emit_keyed(&s, bad, "x").await;
        assert_error(status, &body, 400, "invalid_idempotency_key", &[why]);
    }
    assert_eq!(
        history(&s, "room:1").await.len(),
        2,
        "a refused key stores nothing"
    );
}

async fn history_after_a_position_from_another_epoch_says_reset(b: Backend) {
    let s = start(&b, |c| c).await;
    let first = s.emit_ok("room:1", "chat.message", msg("one")).await;
    let second = s.emit_ok("room:1", "chat.message", msg("two")).await;
    let (status, page) = get(&s.url("/history?channel=room:1")).await;
    assert_eq!(status, 200, "{page}");
    let epoch = page["epoch"].as_str().expect("the channel's epoch").to_string();
    assert_eq!(page["reset"], Value::Null);
    let (_, next) = get(&s.url(&format!("/history?channel=room:1&after={first}@{epoch}"))).await;
    assert_eq!(next["reset"], Value::Null, "{next}");
    assert_eq!(next["entries"][0]["id"], second);
    let other = if epoch == "00000000" {
        "00000001"
    } else {
        "00000000"
    };
    let (status, stale) = get(&s.url(&format!("/history?channel=room:1&after={second}@{other}"))).await;
    assert_eq!(status, 200, "{stale}");
    assert_eq!(stale["reset"]["reason"], "replaced", "{stale}");
    assert_eq!(stale["reset"]["from"], "0-0");
    let ids: Vec<&Value> = stale["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["id"])
        .collect();
    assert_eq!(
        ids,
        [&json!(first), &json!(second)],
        "the page starts where the history now starts"
    );
    let (status, body) = get(&s.url(&format!("/history?channel=room:1&after={second}@nope"))).await;
    assert_error(status, &body, 400, "invalid_id", &["epoch", "ms-seq@epoch"]);
}

async fn start(b: &Backend, tweak: impl FnOnce(Config) -> Config) -> TestServer {
    TestServer::start(b.store(Retention::default(), "t:").await, tweak).await
}

async fn get(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// POST /emit with a raw JSON body and an optional raw Authorization header.
async fn post_emit(s: &TestServer, auth: Option<&str>, body: impl Into<reqwest::Body>) -> (u16, Value) {
    post_emit_raw(s, auth, "application/json", body).await
}

/// Every stored entry of `channel` (up to 1000), oldest first.
async fn history(s: &TestServer, channel: &str) -> Vec<Value> {
    let url = reqwest::Url::parse_with_params(&s.url("/history"), [("channel", channel), ("limit", "1000")])
        .unwrap();
    let (status, body) = get(url.as_str()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["channel"], channel);
    body["entries"].as_array().unwrap().clone()
}

async fn assert_redis_holds_only(b: &Backend, keys: &[&str]) {
    if let Some(found) = redis_keys(b).await {
        let expected: BTreeSet<String> = keys.iter().map(|k| k.to_string()).collect();
        assert_eq!(found, expected, "redis keys");
    }
}

fn is_stream_id(id: &str) -> StreamId {
    id.parse()
        .unwrap_or_else(|e| panic!("{id:?} is not a stream id: {e}"))
}

async fn valid_emits_of_every_demo_event(b: Backend) {
    let s = start(&b, |c| c).await;
    let cases = [
        ("chat.message", json!({ "text": "hello", "user": "ada" })),
        (
            "chat.message",
            json!({ "text": "re: hello\nwith a second line", "user": "bob", "reply_to": "1-0", "mentions": ["ada", "cy"] }),
        ),
        ("chat.typing", json!({ "user": "ada", "active": true })),
        ("chat.typing", json!({ "user": "ada", "active": false })),
        ("notification.alert", json!("deploy at 5 \u{1F680}")),
        ("presence.status", json!({ "user": "ada", "status": "online" })),
        ("presence.status", json!({ "user": "ada", "status": "away" })),
        ("presence.status", json!({ "user": "ada", "status": "offline" })),
    ];
    let mut expected = Vec::new();
    let mut last = StreamId::ZERO;
    for (event, data) in &cases {
        let id = s.emit_ok("room:1", event, data.clone()).await;
        let parsed = is_stream_id(&id);
        assert!(parsed > last, "ids grow: {parsed} after {last}");
        last = parsed;
        expected.push(json!({ "id": id, "channel": "room:1", "event": event, "data": data }));
    }
    assert_eq!(history(&s, "room:1").await, expected);
    assert!(
        history(&s, "room:2").await.is_empty(),
        "other channels are untouched"
    );
}

async fn invalid_payloads_list_every_failing_pointer_and_write_nothing(b: Backend) {
    let s = start(&b, |c| c).await;
    s.emit_ok("room:1", "chat.message", msg("kept")).await;
    let before = history(&s, "room:1").await;
    let long_text = "x".repeat(2001);
    let long_user = "u".repeat(65);
    let many_mentions = vec!["m"; 21];
    // (event, payload, every pointer expected, words the messages must contain)
    let cases: Vec<(&str, Value, Vec<&str>, Vec<&str>)> = vec![
        (
            "chat.message",
            json!({ "text": 5, "user": "ada" }),
            vec!["/data/text"],
            vec!["string"],
        ),
        (
            "chat.message",
            json!({ "text": "hi" }),
            vec!["/data"],
            vec!["user"],
        ),
        (
            "chat.message",
            json!({ "text": "hi", "user": "ada", "color": "red" }),
            vec!["/data"],
            vec!["color"],
        ),
        (
            "presence.status",
            json!({ "user": "ada", "status": "busy" }),
            vec!["/data/status"],
            vec!["busy"],
        ),
        (
            "notification.alert",
            json!("x".repeat(281)),
            vec!["/data"],
            vec!["long"],
        ),
        (
            "chat.message",
            json!({ "text": long_text, "user": "ada" }),
            vec!["/data/text"],
            vec!["long"],
        ),
        (
            "chat.message",
            json!({ "text": "hi", "user": long_user }),
            vec!["/data/user"],
            vec!["long"],
        ),
        (
            "chat.message",
            json!({ "text": "hi", "user": "ada", "mentions": many_mentions }),
            vec!["/data/mentions"],
            vec![],
        ),
        (
            "notification.alert",
            json!({ "text": "hi" }),
            vec!["/data"],
            vec!["string"],
        ),
        ("chat.typing", json!(null), vec!["/data"], vec![]),
        (
            "chat.typing",
            json!({ "user": "", "active": "yes" }),
            vec!["/data/user", "/data/active"],
            vec!["boolean"],
        ),
        (
            "chat.message",
            json!({ "text": "", "user": 7, "mentions": ["ok", ""], "extra": 1 }),
            vec!["/data/text", "/data/user", "/data/mentions/1", "/data"],
            vec!["extra"],
        ),
    ];
    for (event, data, pointers, words) in cases {
        let (status, body) = s.emit("room:1", event, data.clone()).await;
        let what = format!("{event} {data}: {body}");
        assert_eq!(status, 422, "{what}");
        assert_eq!(body["error"], "invalid_payload", "{what}");
        assert_eq!(body["event"], event, "{what}");
        assert!(
            body["message"].as_str().is_some_and(|m| m.contains(event)),
            "{what}"
        );
        let errors = body["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("no errors in {what}"));
        let found: BTreeSet<&str> = errors.iter().map(|e| e["pointer"].as_str().unwrap()).collect();
        let wanted: BTreeSet<&str> = pointers.into_iter().collect();
        assert_eq!(found, wanted, "{what}");
        for e in errors {
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}");
        }
        let messages: String = errors
            .iter()
            .map(|e| e["message"].as_str().unwrap())
            .collect::<Vec<_>>()
            .join("; ");
        for w in words {
            assert!(
                messages.contains(w),
                "messages {messages:?} should mention {w:?} ({what})"
            );
        }
    }
    assert_eq!(
        history(&s, "room:1").await,
        before,
        "refused payloads are not stored"
    );
    let (status, body) = s
        .emit("room:9", "chat.message", json!({ "text": "" , "user": "ada" }))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(history(&s, "room:9").await.is_empty());
    assert_redis_holds_only(&b, &["t:room:1"]).await;
}

async fn unknown_event_is_422_and_writes_nothing(b: Backend) {
    let s = start(&b, |c| c).await;
    for event in ["chat.shout", "chat", "", "CHAT.MESSAGE", "tidings.ready"] {
        let (status, body) = s.emit("room:1", event, msg("hi")).await;
        assert_error(
            status,
            &body,
            422,
            "unknown_event",
            &[
                "chat.message",
                "chat.typing",
                "notification.alert",
                "presence.status",
            ],
        );
    }
    assert!(history(&s, "room:1").await.is_empty());
    assert_redis_holds_only(&b, &[]).await;
}

async fn malformed_bodies_are_400(b: Backend) {
    let s = start(&b, |c| c).await;
    let auth = format!("Bearer {EMIT_KEY}");
    let cases: &[(&str, &[&str])] = &[
        (
            r#"{"channel":"room:1","event":"chat.message","data":"#,
            &["expected"],
        ),
        ("not json", &["expected"]),
        ("", &["expected"]),
        ("[1,2,3]", &["expected"]),
        (r#""a string""#, &["expected"]),
        ("42", &["expected"]),
        ("null", &["expected"]),
        (
            r#"{"event":"chat.message","data":{"text":"hi","user":"ada"}}"#,
            &["channel"],
        ),
        (
            r#"{"channel":"room:1","data":{"text":"hi","user":"ada"}}"#,
            &["event"],
        ),
        (r#"{"channel":"room:1","event":"chat.message"}"#, &["data"]),
        (
            r#"{"channel":5,"event":"chat.message","data":{"text":"hi","user":"ada"}}"#,
            &["expected"],
        ),
        (
            r#"{"channel":"room:1","event":"chat.message","data":{"text":"hi","user":"ada"},"extra":1}"#,
            &["extra"],
        ),
    ];
    for (body_text, mentions) in cases {
        let (status, body) = post_emit(&s, Some(&auth), body_text.to_string()).await;
        assert_eq!(status, 400, "{body_text:?}: {body}");
        assert_error(status, &body, 400, "invalid_json", mentions);
    }
    assert!(history(&s, "room:1").await.is_empty());
    assert_redis_holds_only(&b, &[]).await;
}

async fn bad_channels_are_400(b: Backend) {
    let s = start(&b, |c| c).await;
    let too_long = "x".repeat(129);
    let cases: Vec<(&str, &[&str])> = vec![
        ("room 1", &["allowed are", "' '"]),
        ("room\n1", &["allowed are"]),
        ("{room}", &["allowed are", "'{'"]),
        ("room,1", &["allowed are"]),
        ("room=1", &["allowed are"]),
        ("caf\u{e9}", &["allowed are"]),
        ("room/1", &["allowed are"]),
        (&too_long, &["129", "128"]),
        ("", &["empty"]),
    ];
    for (channel, mentions) in cases {
        let (status, body) = s.emit(channel, "chat.message", msg("hi")).await;
        assert_error(status, &body, 400, "invalid_channel", mentions);
    }
    // The longest allowed name is fine.
    s.emit_ok(&"x".repeat(128), "chat.message", msg("hi")).await;
    let key = format!("t:{}", "x".repeat(128));
    assert_redis_holds_only(&b, &[&key]).await;
}

async fn missing_or_wrong_key_is_401(b: Backend) {
    let s = start(&b, |c| c).await;
    let body = json!({ "channel": "room:1", "event": "chat.message", "data": msg("hi") }).to_string();
    let wrong = format!("Bearer {EMIT_KEY}x");
    let no_scheme = EMIT_KEY.to_string();
    let basic = format!("Basic {EMIT_KEY}");
    let cases: Vec<(Option<&str>, &str)> = vec![
        (None, "Authorization"),
        (Some("Bearer wrong"), "wrong"),
        (Some(&wrong), "wrong"),
        // HTTP drops the trailing space, so this arrives as a bare "Bearer".
        (Some("Bearer "), "Bearer"),
        (Some(&no_scheme), "Bearer"),
        (Some(&basic), "Bearer"),
        (Some(""), "Bearer"),
    ];
    for (auth, mention) in cases {
        let (status, resp) = post_emit(&s, auth, body.clone()).await;
        assert_error(status, &resp, 401, "unauthorized", &[mention]);
    }
    // A bad key is refused before the body is looked at.
    let (status, resp) = post_emit(&s, None, "not json").await;
    assert_error(status, &resp, 401, "unauthorized", &[]);
    assert!(history(&s, "room:1").await.is_empty());
    assert_redis_holds_only(&b, &[]).await;
    let (status, _) = post_emit(&s, Some(&format!("Bearer {EMIT_KEY}")), body).await;
    assert_eq!(status, 200);
}

async fn oversize_payloads_are_413_naming_the_limit(b: Backend) {
    let s = start(&b, |mut c| {
        c.limits.max_payload_bytes = 256;
        c
    })
    .await;
    // Exactly at the limit: {"text":"…","user":"ada"} is 24 bytes plus the text.
    s.emit_ok("room:1", "chat.message", msg(&"x".repeat(232))).await;
    // A valid payload one byte over the limit, in a body the HTTP layer still reads.
    let (status, body) = s.emit("room:1", "chat.message", msg(&"x".repeat(233))).await;
    assert_error(status, &body, 413, "payload_too_large", &["257", "256"]);
    assert_eq!(body["limit"], 256);
    // A body far over the limit is cut off by the HTTP layer.
    let (status, body) = s.emit("room:1", "chat.message", msg(&"x".repeat(2000))).await;
    assert_error(status, &body, 413, "payload_too_large", &["256"]);
    assert_eq!(body["limit"], 256);
    let huge = format!(
        r#"{{"channel":"room:1","event":"notification.alert","data":"{}"}}"#,
        "y".repeat(1 << 20)
    );
    let (status, body) = post_emit(&s, Some(&format!("Bearer {EMIT_KEY}")), huge).await;
    assert_error(status, &body, 413, "payload_too_large", &["256"]);
    // The typed API has the same limit.
    let big = ChatMessage {
        text: "z".repeat(300).parse().unwrap(),
        user: "ada".parse().unwrap(),
        reply_to: None,
        mentions: vec![],
    };
    match s.rt.channel("room:1").emit(big).await {
        Err(EmitError::TooLarge { size, max }) => {
            assert_eq!(max, 256);
            assert!(size > 256);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(history(&s, "room:1").await.len(), 1);
    assert_redis_holds_only(&b, &["t:room:1"]).await;
}

fn texts(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e["data"]["text"].as_str().unwrap().to_string())
        .collect()
}

fn names(range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.map(|i| format!("m{i}")).collect()
}

async fn history_page(s: &TestServer, query: &str) -> Vec<Value> {
    let (status, body) = get(&s.url(&format!("/history?{query}"))).await;
    assert_eq!(status, 200, "{query}: {body}");
    body["entries"].as_array().unwrap().clone()
}

async fn history_pages_latest_after_and_before(b: Backend) {
    let s = start(&b, |c| c).await;
    let mut ids = vec![String::new()]; // ids[i] is the id of m{i}
    for i in 1..=25 {
        ids.push(s.emit_ok("room:1", "chat.message", msg(&format!("m{i}"))).await);
        if i % 10 == 0 {
            s.emit_ok("room:2", "chat.message", msg(&format!("other{i}")))
                .await;
        }
    }
    let all = history_page(&s, "channel=room:1").await;
    assert_eq!(
        texts(&all),
        names(1..=25),
        "default: the newest 100, oldest first"
    );
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e["id"], ids[i + 1]);
        assert_eq!(e["channel"], "room:1");
        assert_eq!(e["event"], "chat.message");
    }
    assert_eq!(
        texts(&history_page(&s, "channel=room:1&limit=5").await),
        names(21..=25)
    );
    assert_eq!(
        texts(&history_page(&s, "channel=room:1&limit=1").await),
        names(25..=25)
    );
    let q = format!("channel=room:1&after={}&limit=5", ids[5]);
    assert_eq!(texts(&history_page(&s, &q).await), names(6..=10));
    let q = format!("channel=room:1&after={}", ids[20]);
    assert_eq!(texts(&history_page(&s, &q).await), names(21..=25));
    let q = format!("channel=room:1&after={}", ids[25]);
    assert!(history_page(&s, &q).await.is_empty());
    assert_eq!(
        texts(&history_page(&s, "channel=room:1&after=0-0&limit=2").await),
        names(1..=2)
    );
    let q = format!("limit=3&before={}&channel=room:1", ids[10]);
    assert_eq!(texts(&history_page(&s, &q).await), names(7..=9));
    let q = format!("channel=room:1&before={}", ids[1]);
    assert!(history_page(&s, &q).await.is_empty());
    assert!(history_page(&s, "channel=room:1&before=0-0").await.is_empty());

    // Paging forward and back covers everything exactly once.
    let mut forward = Vec::new();
    let mut after = "0-0".to_string();
    loop {
        let page = history_page(&s, &format!("channel=room:1&after={after}&limit=7")).await;
        let Some(last) = page.last() else { break };
        after = last["id"].as_str().unwrap().to_string();
        forward.extend(page);
    }
    assert_eq!(texts(&forward), names(1..=25));
    let mut back = history_page(&s, "channel=room:1&limit=7").await;
    loop {
        let first = back[0]["id"].as_str().unwrap().to_string();
        let page = history_page(&s, &format!("channel=room:1&before={first}&limit=7")).await;
        if page.is_empty() {
            break;
        }
        back.splice(0..0, page);
    }
    assert_eq!(back, all);

    assert_eq!(
        texts(&history_page(&s, "channel=room:2").await),
        ["other10", "other20"]
    );
    assert!(history_page(&s, "channel=nobody.here").await.is_empty());
}

async fn history_caps_the_limit_and_rejects_bad_parameters(b: Backend) {
    let s = start(&b, |mut c| {
        c.limits.max_history = 20;
        c
    })
    .await;
    for i in 1..=25 {
        s.emit_ok("room:1", "chat.message", msg(&format!("m{i}"))).await;
    }
    assert_eq!(texts(&history_page(&s, "channel=room:1").await), names(6..=25));
    assert_eq!(
        texts(&history_page(&s, "channel=room:1&limit=1000").await),
        names(6..=25)
    );
    assert_eq!(
        texts(&history_page(&s, "channel=room:1&limit=21").await),
        names(6..=25)
    );
    assert_eq!(
        texts(&history_page(&s, "channel=room:1&after=0-0&limit=500").await),
        names(1..=20)
    );

    let bad: &[(&str, &str, &[&str])] = &[
        ("channel=room:1&limit=0", "invalid_limit", &["limit", "20"]),
        ("channel=room:1&limit=-1", "invalid_limit", &["limit", "20"]),
        ("channel=room:1&limit=abc", "invalid_limit", &["limit"]),
        ("channel=room:1&limit=1.5", "invalid_limit", &["limit"]),
        ("channel=room:1&limit=", "invalid_limit", &["limit"]),
        ("channel=room:1&limit=5&limit=6", "invalid_query", &["limit"]),
        ("channel=room:1&after=abc", "invalid_id", &["after", "abc"]),
        ("channel=room:1&after=1-", "invalid_id", &["after"]),
        ("channel=room:1&after=1700000000000", "invalid_id", &["after"]),
        ("channel=room:1&after=1-2-3", "invalid_id", &["after"]),
        ("channel=room:1&after=", "invalid_id", &["after"]),
        ("channel=room:1&before=-1", "invalid_id", &["before"]),
        ("channel=room:1&before=x-0", "invalid_id", &["before"]),
        (
            "channel=room:1&after=1-0&before=9-0",
            "invalid_query",
            &["after", "before"],
        ),
        ("channel=room:1&foo=1", "invalid_query", &["foo", "allowed"]),
        ("channel=room:1&cursor=room:1%3D0-0", "invalid_query", &["cursor"]),
        ("channel=room:1&channel=room:2", "invalid_query", &["channel"]),
        ("", "invalid_channel", &["channel"]),
        ("limit=5", "invalid_channel", &["channel"]),
        ("channel=", "invalid_channel", &["empty"]),
        ("channel=room%201", "invalid_channel", &["allowed are"]),
        ("channel=%7Broom%7D", "invalid_channel", &["allowed are"]),
    ];
    for (query, code, mentions) in bad {
        let (status, body) = get(&s.url(&format!("/history?{query}"))).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_error(status, &body, 400, code, mentions);
    }
}

async fn health_names_the_store(b: Backend) {
    let s = start(&b, |c| c).await;
    let (status, body) = get(&s.url("/health")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["store"], b.name());
    assert_eq!(body["subscribers"], 0);
    let mut sse = SseReader::open(&s.url("/realtime?channel=room:1,room:2"), None).await;
    sse.until("tidings.ready").await;
    let (_, body) = get(&s.url("/health")).await;
    assert_eq!(body["subscribers"], 1, "{body}");
    assert_eq!(body["channels_watched"], 2, "{body}");
}

async fn unknown_routes_are_404_json(b: Backend) {
    let s = start(&b, |c| c).await;
    for path in ["/nope", "/emit/extra", "/realtime/x", "/history/"] {
        let (status, body) = get(&s.url(path)).await;
        assert_error(
            status,
            &body,
            404,
            "not_found",
            &["/emit", "/realtime", "/history"],
        );
    }
    let r = reqwest::Client::new().post(s.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "not_found");

    // A known route with the wrong method is a JSON 405 too, with the Allow header.
    let client = reqwest::Client::new();
    for (request, allow) in [
        (client.get(s.url("/emit")), "POST"),
        (client.post(s.url("/realtime")), "GET,HEAD"),
        (client.delete(s.url("/history")), "GET,HEAD"),
    ] {
        let r = request.send().await.unwrap();
        let status = r.status().as_u16();
        assert_eq!(r.headers()["allow"], allow);
        let body: Value = r.json().await.unwrap();
        assert_error(
            status,
            &body,
            405,
            "method_not_allowed",
            &["is not allowed", "POST /emit"],
        );
    }
}

/// A payload type written by hand, which the generated types would not let one build.
#[derive(serde::Serialize)]
struct LooseMessage {
    text: String,
    user: String,
}

impl Emittable for LooseMessage {
    fn event_name(&self) -> &'static str {
        "chat.message"
    }
}

#[derive(serde::Serialize)]
struct Shout(String);

impl Emittable for Shout {
    fn event_name(&self) -> &'static str {
        "chat.shout"
    }
}

fn violations(result: Result<StreamId, EmitError>) -> Vec<String> {
    match result {
        Err(EmitError::Invalid(ValidateError::Invalid { violations, .. })) => {
            violations.into_iter().map(|v| v.pointer).collect()
        }
        other => panic!("expected EmitError::Invalid, got {other:?}"),
    }
}

async fn typed_api_emits_validates_and_delivers(b: Backend) {
    let s = start(&b, |c| c).await;
    let mut sse = SseReader::open(&s.url("/realtime?channel=room:1"), None).await;
    sse.until("tidings.ready").await;
    let room = s.rt.channel("room:1");

    let message = ChatMessage {
        text: "hello from Rust".parse().unwrap(),
        user: "ada".parse().unwrap(),
        reply_to: None,
        mentions: vec!["bob".parse().unwrap()],
    };
    let id = room.emit(message.clone()).await.unwrap();
    let frame = sse.next().await.unwrap();
    assert_eq!(frame.event.as_deref(), Some("chat.message"));
    assert_eq!(frame.id.as_deref().map(by_id), Some(format!("room:1={id}")));
    let envelope = frame.json();
    assert_eq!(envelope["id"], id.to_string());
    assert_eq!(envelope["channel"], "room:1");
    let decoded: ChatMessage = serde_json::from_value(envelope["data"].clone()).unwrap();
    assert_eq!(decoded, message);

    // Invalid typed payloads are refused before anything is stored.
    let mut crowded = message.clone();
    crowded.mentions = (0..21).map(|i| format!("u{i}").parse().unwrap()).collect();
    assert_eq!(violations(room.emit(crowded).await), ["/mentions"]);
    let empty = LooseMessage {
        text: String::new(),
        user: "ada".into(),
    };
    assert_eq!(violations(room.emit(empty).await), ["/text"]);
    match room.emit(Shout("hey".into())).await {
        Err(EmitError::Invalid(ValidateError::UnknownEvent { name, known })) => {
            assert_eq!(name, "chat.shout");
            assert!(known.contains("chat.message"), "{known}");
        }
        other => panic!("expected UnknownEvent, got {other:?}"),
    }
    for (name, expected) in [("room 1", "bad char"), ("", "empty"), ("a{b}", "bad char")] {
        let err = s.rt.channel(name).emit(message.clone()).await.unwrap_err();
        match (&err, expected) {
            (EmitError::Channel(ChannelError::Empty), "empty") => {}
            (EmitError::Channel(ChannelError::BadChar { .. }), "bad char") => {}
            _ => panic!("{name:?}: expected a channel error, got {err:?}"),
        }
    }

    // The generated enum emits under each payload's own event name.
    let status = Event::from(PresenceStatus {
        user: "ada".parse().unwrap(),
        status: Availability::Away,
    });
    let id2 = room.emit(status).await.unwrap();
    let frame = sse.next().await.unwrap();
    assert_eq!(
        frame.event.as_deref(),
        Some("presence.status"),
        "nothing was delivered in between"
    );
    assert_eq!(frame.json()["id"], id2.to_string());
    assert_eq!(frame.json()["data"], json!({ "user": "ada", "status": "away" }));

    let stored = room.history(Range::Latest, 100).await.unwrap();
    assert_eq!(stored.len(), 2, "only the valid emits are stored");
    assert_eq!(stored[0].decode::<ChatMessage>().unwrap().unwrap(), message);
    assert_eq!(stored[1].id, id2);
    assert_redis_holds_only_channels(&b, &["t:room:1"]).await;
}

/// Like [`assert_redis_holds_only`], ignoring the hub's wake-up key (`t:#wake:…`).
async fn assert_redis_holds_only_channels(b: &Backend, keys: &[&str]) {
    if let Some(found) = redis_keys(b).await {
        let found: BTreeSet<String> = found.into_iter().filter(|k| !k.contains('#')).collect();
        let expected: BTreeSet<String> = keys.iter().map(|k| k.to_string()).collect();
        assert_eq!(found, expected, "redis keys");
    }
}
