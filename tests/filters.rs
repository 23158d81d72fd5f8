//! Server-side filters: exactly the matching events, live and on resume, over SSE and
//! WebSocket, on both stores; cursors that move past what was filtered out; the schema's
//! refusals; a filter a token imposes.

#[macro_use]
mod support;

use std::collections::BTreeMap;

use serde_json::{json, Value};
use support::*;
use tidings::{Config, JwtAuthorizer};

fn say(user: &str, text: &str) -> Value {
    json!({ "text": text, "user": user })
}

fn enc(v: &Value) -> String {
    form_urlencoded::byte_serialize(v.to_string().as_bytes()).collect()
}

async fn server(backend: &Backend, tweak: impl FnOnce(Config) -> Config) -> TestServer {
    let store = backend.store(tidings::Retention::default(), "f:").await;
    TestServer::start(store, tweak).await
}

/// Texts per channel of the chat messages among `frames` (SSE).
fn texts(frames: &[Frame]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in frames
        .iter()
        .filter(|f| f.event.as_deref() == Some("chat.message"))
    {
        let d = f.json();
        out.entry(d["channel"].as_str().unwrap().to_string())
            .or_default()
            .push(d["data"]["text"].as_str().unwrap().to_string());
    }
    out
}

/// The room:N → [texts] ada said, for messages `from..to` of [`emit_interleaved`].
fn adas(from: usize, to: usize) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in (from..to).filter(|i| i % 2 == 0) {
        out.entry(format!("room:{}", i % 3 + 1))
            .or_default()
            .push(format!("m{i}"));
    }
    out
}

/// Messages `from..to` over room:1..3 in turn, said by ada (even) and bob (odd): half of every
/// channel's messages are ada's.
async fn emit_interleaved(s: &TestServer, from: usize, to: usize) {
    for i in from..to {
        let user = if i % 2 == 0 { "ada" } else { "bob" };
        s.emit_ok(
            &format!("room:{}", i % 3 + 1),
            "chat.message",
            say(user, &format!("m{i}")),
        )
        .await;
    }
}

async fn filtered_sse_live_and_resume_are_exact(backend: Backend) {
    let s = server(&backend, |c| c).await;
    let filter = enc(&json!({ "user": "ada" }));
    let url = s.url(&format!("/realtime?channel=room:1,room:2,room:3&filter={filter}"));
    let mut sse = SseReader::open(&url, None).await;
    sse.until("tidings.ready").await;
    emit_interleaved(&s, 0, 24).await;
    // Live: exactly ada's, in order per channel. Read them all, keep the cursor after m12.
    let mut got = Vec::new();
    while texts(&got).values().map(Vec::len).sum::<usize>() < 12 {
        got.push(sse.next().await.expect("the stream stays open"));
    }
    assert_eq!(texts(&got), adas(0, 24), "{}", backend.name());
    let upto = got
        .iter()
        .position(|f| f.data.as_deref().is_some_and(|d| d.contains("\"m12\"")))
        .unwrap();
    let cursor = got[upto].id.clone().unwrap();
    drop(sse);
    emit_interleaved(&s, 24, 36).await;
    // Resume from m12's cursor: ada's after it, nothing of bob's, nothing twice.
    let mut sse = SseReader::open(&url, Some(&cursor)).await;
    let frames = sse.until("tidings.ready").await;
    assert_eq!(texts(&frames), adas(14, 36), "{}", backend.name());
    assert!(frames.iter().all(|f| f.event.as_deref() != Some("tidings.reset")));
}

async fn a_filtered_out_event_still_moves_the_cursor(backend: Backend) {
    let s = server(&backend, |c| c).await;
    let url = s.url(&format!(
        "/realtime?channel=room:1&filter={}",
        enc(&json!({ "user": "ada" }))
    ));
    let mut sse = SseReader::open(&url, None).await;
    let ready = sse.until("tidings.ready").await.pop().unwrap();
    let before = ready.id.unwrap();
    let mut bobs = Vec::new();
    for i in 0..3 {
        bobs.push(
            s.emit_ok("room:1", "chat.message", say("bob", &format!("b{i}")))
                .await,
        );
    }
    drop(sse);
    // From the cursor before bob's: his messages are replayed, filtered out, and the ready
    // frame's cursor is past them.
    let mut sse = SseReader::open(&url, Some(&before)).await;
    let frames = sse.until("tidings.ready").await;
    assert!(texts(&frames).is_empty(), "{frames:?}");
    let after = frames.last().unwrap().id.clone().unwrap();
    let bob_last = bobs.last().unwrap();
    assert!(
        after.starts_with(&format!("room:1={bob_last}")),
        "{after} should be past {bob_last}"
    );
    let ada = s.emit_ok("room:1", "chat.message", say("ada", "a0")).await;
    let f = sse.next().await.unwrap();
    assert_eq!(f.json()["id"], ada.as_str());
    drop(sse);
    // From that cursor nothing is replayed, filtered or not.
    let mut sse = SseReader::open(&url, Some(&after)).await;
    let frames = sse.until("tidings.ready").await;
    assert_eq!(
        texts(&frames),
        BTreeMap::from([("room:1".to_string(), vec!["a0".to_string()])])
    );
}

async fn filtered_websocket_subscriptions_are_exact_per_subscription(backend: Backend) {
    let s = server(&backend, |c| c).await;
    let mut ws = WsClient::connect(&s.url(""), "").await;
    ws.next().await.unwrap();
    // Two subscriptions with their own filters on one connection.
    ws.send(
        json!({"type": "subscribe", "ref": 1, "channels": ["room:1", "room:2"], "filter": {"user": "ada"}}),
    )
    .await;
    ws.until("ready").await;
    ws.send(
        json!({"type": "subscribe", "ref": 2, "channels": ["room:3"], "filter": {"text": {"prefix": "m1"}}}),
    )
    .await;
    ws.until("ready").await;
    emit_interleaved(&s, 0, 24).await;
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut last = String::new();
    // ada's on room:1 and room:2, and on room:3 the texts starting m1 (m11, m14, m17), bob's too.
    let want_room3: Vec<String> = (0..24)
        .filter(|i| i % 3 == 2 && format!("m{i}").starts_with("m1"))
        .map(|i| format!("m{i}"))
        .collect();
    let mut want = adas(0, 24);
    want.remove("room:3");
    want.insert("room:3".into(), want_room3);
    let total: usize = want.values().map(Vec::len).sum();
    while got.values().map(Vec::len).sum::<usize>() < total {
        let f = ws.next().await.expect("open");
        if f["type"] == "event" {
            got.entry(f["channel"].as_str().unwrap().to_string())
                .or_default()
                .push(f["data"]["text"].as_str().unwrap().to_string());
            last = f["cursor"].as_str().unwrap().to_string();
        }
    }
    assert_eq!(got, want, "{}", backend.name());
    drop(ws);
    // A resume of the first subscription with the cursor: nothing more of it was missed.
    emit_interleaved(&s, 24, 30).await;
    let mut ws = WsClient::connect(&s.url(""), "").await;
    ws.next().await.unwrap();
    ws.send(json!({"type": "subscribe", "ref": 1, "channels": ["room:1", "room:2"], "filter": {"user": "ada"}, "cursor": last}))
        .await;
    let frames = ws.until("ready").await;
    let replayed: Vec<&str> = frames
        .iter()
        .filter(|f| f["type"] == "event")
        .map(|f| f["data"]["text"].as_str().unwrap())
        .collect();
    let mut expect: Vec<String> = adas(24, 30)
        .into_iter()
        .filter(|(c, _)| c != "room:3")
        .flat_map(|(_, v)| v)
        .collect();
    expect.sort();
    let mut replayed_sorted: Vec<String> = replayed.iter().map(|s| s.to_string()).collect();
    replayed_sorted.sort();
    assert_eq!(replayed_sorted, expect, "{}", backend.name());
}

/// `GET /history` with `query`: its body, which must be a 200.
async fn history_body(s: &TestServer, query: &str) -> Value {
    let (status, _, body) = get_json(&s.url(&format!("/history?{query}")), &[]).await;
    assert_eq!(status, 200, "{query}: {body}");
    body
}

/// The payload field `field` of every entry of a `/history` body.
fn data_of(body: &Value, field: &str) -> Vec<Value> {
    body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"][field].clone())
        .collect()
}

/// `GET /history` with `query`: the texts of its entries ("-" for none) and its `next`.
async fn history(s: &TestServer, query: &str) -> (Vec<String>, Option<String>) {
    let body = history_body(s, query).await;
    let texts = data_of(&body, "text")
        .iter()
        .map(|t| t.as_str().unwrap_or("-").to_string())
        .collect();
    (texts, body["next"].as_str().map(String::from))
}

fn ms(ids: impl IntoIterator<Item = usize>) -> Vec<String> {
    ids.into_iter().map(|i| format!("m{i}")).collect()
}

async fn filtered_history_counts_matches_and_pages_both_ways(backend: Backend) {
    let s = server(&backend, |c| c).await;
    emit_interleaved(&s, 0, 60).await;
    for i in 0..5 {
        s.emit_ok(
            "room:1",
            "chat.typing",
            json!({"user": "ada", "active": i % 2 == 0}),
        )
        .await;
    }
    // room:1 holds m0, m3, …, m57; ada said the even ones, m0, m6, …, m54, then typed.
    let ada = enc(&json!({ "user": "ada", "event": "chat.message" }));
    let (texts, next) = history(&s, &format!("channel=room:1&limit=4&filter={ada}")).await;
    assert_eq!(
        texts,
        ms([36, 42, 48, 54]),
        "{}: the newest 4 that pass",
        backend.name()
    );
    let next = next.expect("older matches remain");
    let (texts, next) = history(&s, &format!("channel=room:1&limit=4&filter={ada}&before={next}")).await;
    assert_eq!(texts, ms([12, 18, 24, 30]), "{}", backend.name());
    let (texts, end) = history(
        &s,
        &format!("channel=room:1&limit=4&filter={ada}&before={}", next.unwrap()),
    )
    .await;
    assert_eq!(
        (texts, end),
        (ms([0, 6]), None),
        "{}: the start of history",
        backend.name()
    );
    // Forward from m0's id, as far as the end.
    let (status, _, body) = get_json(
        &s.url(&format!("/history?channel=room:1&limit=1&filter={ada}&after=0-0")),
        &[],
    )
    .await;
    assert_eq!(
        (status, &body["entries"][0]["data"]["text"]),
        (200, &json!("m0")),
        "{body}"
    );
    assert!(body["reset"].is_null(), "{body}");
    let m0 = body["entries"][0]["id"].as_str().unwrap().to_string();
    let (texts, next) = history(&s, &format!("channel=room:1&limit=5&filter={ada}&after={m0}")).await;
    assert_eq!(texts, ms([6, 12, 18, 24, 30]), "{}", backend.name());
    let (texts, end) = history(
        &s,
        &format!("channel=room:1&limit=5&filter={ada}&after={}", next.unwrap()),
    )
    .await;
    assert_eq!((texts, end), (ms([36, 42, 48, 54]), None), "{}", backend.name());
    // `events` narrows as on a stream; unfiltered reads are as before, with `next`.
    let (texts, _) = history(&s, "channel=room:1&events=chat.typing&limit=3").await;
    assert_eq!(texts, ["-", "-", "-"]);
    let active = enc(&json!({ "active": true }));
    let body = history_body(&s, &format!("channel=room:1&events=chat.typing&filter={active}")).await;
    assert_eq!(
        data_of(&body, "active"),
        vec![json!(true); 3],
        "typing entries 0, 2 and 4"
    );
    let (texts, next) = history(&s, "channel=room:1&limit=2").await;
    assert_eq!((texts.len(), next.is_some()), (2, true));
}

on_both_backends!(
    filtered_sse_live_and_resume_are_exact,
    a_filtered_out_event_still_moves_the_cursor,
    filtered_websocket_subscriptions_are_exact_per_subscription,
    filtered_history_counts_matches_and_pages_both_ways,
);

#[tokio::test]
async fn history_refuses_bad_filters_as_streams_do() {
    let s = server(&Backend::Memory, |c| c).await;
    for (f, mentions) in [
        (json!({"colour": "red"}), vec!["colour", "fields are"]),
        (json!({"active": {"gt": 1}}), vec!["\"active\"", "not a number"]),
    ] {
        let (status, _, body) = get_json(
            &s.url(&format!("/history?channel=room:1&filter={}", enc(&f))),
            &[],
        )
        .await;
        assert_error(status, &body, 400, "invalid_filter", &mentions);
    }
    let (status, _, body) = get_json(
        &s.url(&format!(
            "/history?channel=room:1&events=chat.typing&filter={}",
            enc(&json!({"text": "x"}))
        )),
        &[],
    )
    .await;
    assert_error(status, &body, 400, "invalid_filter", &["\"text\"", "fields are"]);
    let (status, _, body) = get_json(&s.url("/history?channel=room:1&events=chat.nope"), &[]).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn bad_filters_are_400_or_error_frames_naming_the_problem() {
    let s = server(&Backend::Memory, |c| c).await;
    let mut deep = json!({"user": "ada"});
    for _ in 0..9 {
        deep = json!({ "not": deep });
    }
    let cases = [
        (json!({"colour": "red"}), vec!["no event", "colour", "fields are"]),
        (
            json!({"active": {"gt": 1}}),
            vec!["\"active\"", "boolean", "not a number"],
        ),
        (json!({"status": "busy"}), vec!["\"status\"", "one of"]),
        (json!({"user": {"between": 1}}), vec!["unknown operator"]),
        (deep, vec!["too deep"]),
    ];
    let mut ws = WsClient::connect(&s.url(""), "").await;
    ws.next().await.unwrap();
    for (f, mentions) in &cases {
        let (status, _, body) = get_json(
            &s.url(&format!("/realtime?channel=room:1&filter={}", enc(f))),
            &[],
        )
        .await;
        assert_error(
            status,
            &body,
            400,
            "invalid_filter",
            &mentions.iter().map(|m| &**m).collect::<Vec<_>>(),
        );
        ws.send(json!({"type": "subscribe", "ref": "x", "channels": ["room:1"], "filter": f}))
            .await;
        let e = ws.until("error").await.pop().unwrap();
        assert_eq!(
            (e["error"].as_str(), e["ref"].as_str()),
            (Some("invalid_filter"), Some("x")),
            "{e}"
        );
    }
    // A field of an event the subscription does not get is refused too.
    let (status, _, body) = get_json(
        &s.url(&format!(
            "/realtime?channel=room:1&events=chat.typing&filter={}",
            enc(&json!({"text": "x"}))
        )),
        &[],
    )
    .await;
    assert_error(status, &body, 400, "invalid_filter", &["\"text\"", "fields are"]);
    let long = format!(r#"{{"user":"{}"}}"#, "a".repeat(5000));
    let long: String = form_urlencoded::byte_serialize(long.as_bytes()).collect();
    let (status, _, body) = get_json(&s.url(&format!("/realtime?channel=room:1&filter={long}")), &[]).await;
    assert_error(status, &body, 400, "invalid_filter", &["too long"]);
    assert_eq!(body["limit"], 4096);
    // WebSocket: at most 16 filtered subscriptions on a connection.
    for i in 0..16 {
        ws.send(
            json!({"type": "subscribe", "ref": i, "channels": [format!("c:{i}")], "filter": {"user": "ada"}}),
        )
        .await;
        ws.until("ready").await;
    }
    ws.send(json!({"type": "subscribe", "ref": 99, "channels": ["c:99"], "filter": {"user": "ada"}}))
        .await;
    let e = ws.until("error").await.pop().unwrap();
    assert_eq!(
        (e["error"].as_str(), e["limit"].as_u64()),
        (Some("too_many_filters"), Some(16)),
        "{e}"
    );
}

#[tokio::test]
async fn a_filter_in_the_token_cannot_be_widened() {
    let s = server(&Backend::Memory, |c| {
        c.authorizer(JwtAuthorizer::hs256(JWT_SECRET))
    })
    .await;
    let token = hs256(json!({
        "sub": "ada", "exp": unix_now() + 600, "subscribe": ["room:*"], "filter": {"user": "ada"}
    }));
    let widen = enc(&json!({"or": [{"user": "bob"}, {"user": "ada"}]}));
    let mut own = SseReader::open(
        &s.url(&format!("/realtime?channel=room:1&token={token}&filter={widen}")),
        None,
    )
    .await;
    own.until("tidings.ready").await;
    let mut ws = WsClient::connect(&s.url(""), &format!("?token={token}")).await;
    ws.next().await.unwrap();
    ws.send(json!({"type": "subscribe", "channels": ["room:1"]}))
        .await;
    ws.until("ready").await;
    let mut bobs = WsClient::connect(&s.url(""), &format!("?token={token}")).await;
    bobs.next().await.unwrap();
    bobs.send(json!({"type": "subscribe", "channels": ["room:1"], "filter": {"user": "bob"}}))
        .await;
    bobs.until("ready").await;
    for (u, t) in [("bob", "b1"), ("ada", "a1"), ("bob", "b2"), ("ada", "a2")] {
        s.emit_ok("room:1", "chat.message", say(u, t)).await;
    }
    let mut got = Vec::new();
    while got.len() < 2 {
        let f = own.next().await.unwrap();
        if f.event.as_deref() == Some("chat.message") {
            got.push(f.json()["data"]["text"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(got, ["a1", "a2"], "the client's or did not reach bob's");
    let mut got = Vec::new();
    while got.len() < 2 {
        let f = ws.next().await.unwrap();
        if f["type"] == "event" {
            got.push(f["data"]["text"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(got, ["a1", "a2"], "no filter of its own: the token's");
    // Narrowing to bob under a token for ada's: nothing at all.
    s.emit_ok("room:1", "chat.message", say("ada", "a3")).await;
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(300), bobs.next()).await;
    assert!(
        quiet.is_err(),
        "nothing for bob's filter under ada's token: {quiet:?}"
    );
    // History holds the token to its filter too, with or without one of the client's.
    for own in ["", &format!("&filter={widen}")] {
        let (texts, _) = history(&s, &format!("channel=room:1&token={token}{own}")).await;
        assert_eq!(texts, ["a1", "a2", "a3"], "history under ada's token{own}");
    }
}

#[tokio::test]
async fn a_rare_match_past_the_scan_budget_is_reached_through_next() {
    use tidings::{Filter, Range, MAX_HISTORY_SCAN};
    let store = Backend::Memory
        .store(tidings::Retention::default().max_len(MAX_HISTORY_SCAN * 2), "f:")
        .await;
    let s = TestServer::start(store, |c| c).await;
    let room = s.rt.channel("room:1");
    let name = tidings::Channel::new("room:1").unwrap();
    let emit = |user: &'static str, text: String| {
        let (rt, name) = (s.rt.clone(), name.clone());
        async move {
            rt.emit_json(&name, "chat.message", &say(user, &text))
                .await
                .unwrap()
        }
    };
    let rare = emit("ada", "the one".into()).await;
    for i in 0..MAX_HISTORY_SCAN + 500 {
        emit("bob", format!("b{i}")).await;
    }
    let adas = Filter::parse(&json!({"user": "ada"})).unwrap();
    // One read looks at MAX_HISTORY_SCAN entries, finds nothing, and says where to go on.
    let page = room
        .history_matching(Range::Latest, 10, Some(&adas))
        .await
        .unwrap();
    assert!(page.entries.is_empty(), "{:?}", page.entries.len());
    let next = page.next.expect("history goes on past the budget");
    let page = room
        .history_matching(Range::Before(next), 10, Some(&adas))
        .await
        .unwrap();
    assert_eq!(page.entries.iter().map(|e| e.id).collect::<Vec<_>>(), [rare]);
    assert_eq!(page.next, None, "the start of history");
    // Forward from the start: the one, then the budget runs out among bob's.
    let page = room
        .history_matching(Range::After(tidings::StreamId::ZERO), 2, Some(&adas))
        .await
        .unwrap();
    assert_eq!(page.entries.iter().map(|e| e.id).collect::<Vec<_>>(), [rare]);
    let next = page.next.expect("the budget ran out before the end");
    let page = room
        .history_matching(Range::After(next), 2, Some(&adas))
        .await
        .unwrap();
    assert_eq!((page.entries.len(), page.next), (0, None));
}
