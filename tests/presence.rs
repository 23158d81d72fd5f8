//! Presence (who is here): snapshot, join and leave over WebSocket and SSE, two tabs as one
//! member, a closed tab, limits, GET /presence, and, on Redis with two nodes, a node killed.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;
use tidings::{Config, JwtAuthorizer, MemoryStore};

fn token(sub: &str, name: &str) -> String {
    hs256(json!({ "sub": sub, "name": name, "exp": unix_now() + 600, "subscribe": ["doc:*", "room:*"] }))
}

fn presence_config(c: Config) -> Config {
    c.authorizer(JwtAuthorizer::hs256(JWT_SECRET)).presence("doc:*")
}

/// Connects as `sub` and subscribes to `channel`, joining its presence with `data` (`None`:
/// watching only); returns the client and the presence snapshot it got.
async fn member(base: &str, sub: &str, channel: &str, data: Option<Value>) -> (WsClient, Value) {
    let mut ws = WsClient::connect(base, &format!("?token={}", token(sub, &format!("{sub} name")))).await;
    assert_eq!(ws.next().await.unwrap()["type"], "welcome");
    let mut msg = json!({"type": "subscribe", "ref": "s", "channels": [channel]});
    if let Some(data) = data {
        msg["presence"] = data;
    }
    ws.send(msg).await;
    let frames = ws.until("presence.snapshot").await;
    let snapshot = frames.last().unwrap().clone();
    (ws, snapshot)
}

/// Member ids of a snapshot.
fn ids(snapshot: &Value) -> Vec<String> {
    snapshot["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

/// The next presence frame, skipping others.
async fn next_presence(ws: &mut WsClient) -> Value {
    loop {
        let f = ws.next().await.expect("a presence frame before the close");
        if f["type"].as_str().unwrap_or("").starts_with("presence.") {
            return f;
        }
    }
}

#[tokio::test]
async fn snapshot_join_leave_and_two_tabs_on_memory() {
    let s = TestServer::start(Arc::new(MemoryStore::default()), presence_config).await;
    let base = s.url("");
    let (mut ada, snap) = member(&base, "ada", "doc:1", Some(json!({"status": "editing"}))).await;
    assert_eq!(ids(&snap), ["ada"], "{snap}");
    assert_eq!(snap["members"][0]["name"], "ada name");
    assert_eq!(snap["members"][0]["data"], json!({"status": "editing"}));
    assert_eq!(snap["count"], 1);
    // Ada's own join comes through the stream too (joins are idempotent against the snapshot).
    let own = next_presence(&mut ada).await;
    assert_eq!(
        (own["type"].as_str(), own["member"]["id"].as_str()),
        (Some("presence.join"), Some("ada")),
        "{own}"
    );

    // Bob watches over SSE without joining: he sees Ada, then Carol's join.
    let mut bob = SseReader::open(
        &format!(
            "{}&token={}",
            s.url("/realtime?channel=doc:1"),
            token("bob", "Bob")
        ),
        None,
    )
    .await;
    let frames = bob.until("tidings.presence.snapshot").await;
    let snap = frames.last().unwrap().json();
    assert_eq!(ids(&snap), ["ada"], "{snap}");
    let (mut carol, snap) = member(&base, "carol", "doc:1", Some(json!(true))).await;
    assert_eq!(ids(&snap), ["ada", "carol"]);
    for joined in [
        next_presence(&mut ada).await,
        bob.until("tidings.presence.join").await.pop().unwrap().json(),
    ] {
        assert_eq!(joined["member"]["id"], "carol", "{joined}");
        assert_eq!(joined["member"]["data"], Value::Null);
    }

    // A second tab of Carol: still one member, with two connections; no join is sent.
    let (carol2, snap) = member(&base, "carol", "doc:1", Some(json!(true))).await;
    assert_eq!(ids(&snap), ["ada", "carol"]);
    assert_eq!(snap["members"][1]["connections"], 2, "{snap}");
    let (status, _, body) = get_json(
        &s.url(&format!("/presence?channel=doc:1&token={}", token("bob", "Bob"))),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 2);
    // Closing one tab: Carol stays. Closing the other: she leaves, and everyone hears it.
    drop(carol2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, _, body) = get_json(
        &s.url(&format!("/presence?channel=doc:1&token={}", token("bob", "Bob"))),
        &[],
    )
    .await;
    assert_eq!(body["members"][1]["connections"], 1, "{body}");
    carol
        .send(json!({"type": "presence.leave", "ref": 9, "channel": "doc:1"}))
        .await;
    let left = carol.until("presence.left").await.pop().unwrap();
    assert_eq!(left["ref"], 9);
    for f in [
        next_presence(&mut ada).await,
        bob.until("tidings.presence.leave").await.pop().unwrap().json(),
    ] {
        assert_eq!(f["member"]["id"], "carol", "{f}");
    }
    // A closed tab leaves without a word from it.
    drop(ada);
    let f = bob.until("tidings.presence.leave").await.pop().unwrap().json();
    assert_eq!(f["member"]["id"], "ada");
    let (_, _, body) = get_json(
        &s.url(&format!("/presence?channel=doc:1&token={}", token("bob", "Bob"))),
        &[],
    )
    .await;
    assert_eq!(body["count"], 0, "{body}");
}

#[tokio::test]
async fn sse_joins_with_the_presence_parameter_and_leaves_when_it_ends() {
    let s = TestServer::start(Arc::new(MemoryStore::default()), presence_config).await;
    let (mut watcher, _) = member(&s.url(""), "ada", "doc:2", None).await;
    let url = format!(
        "{}&token={}&presence=%7B%22cursor%22%3A3%7D",
        s.url("/realtime?channel=doc:2"),
        token("bob", "Bob")
    );
    let bob = SseReader::open(&url, None).await;
    let joined = next_presence(&mut watcher).await;
    assert_eq!(joined["type"], "presence.join");
    assert_eq!(joined["member"]["id"], "bob");
    assert_eq!(joined["member"]["data"], json!({"cursor": 3}));
    drop(bob);
    let left = next_presence(&mut watcher).await;
    assert_eq!(
        (left["type"].as_str(), left["member"]["id"].as_str()),
        (Some("presence.leave"), Some("bob"))
    );
}

#[tokio::test]
async fn limits_and_refusals_name_the_problem() {
    let s = TestServer::start(Arc::new(MemoryStore::default()), |c| {
        let mut limits = tidings::Limits::default();
        limits.max_presence_members = 2;
        limits.max_presence_data_bytes = 32;
        presence_config(c).limits(limits)
    })
    .await;
    let base = s.url("");
    let (_a, _) = member(&base, "ada", "doc:3", Some(json!(true))).await;
    let (_b, _) = member(&base, "bob", "doc:3", Some(json!(true))).await;
    // A third member is refused; the subscription itself stands.
    let mut carol = WsClient::connect(&base, &format!("?token={}", token("carol", "C"))).await;
    carol.next().await.unwrap();
    carol
        .send(json!({"type": "subscribe", "ref": 1, "channels": ["doc:3"], "presence": true}))
        .await;
    let frames = carol.until("presence.snapshot").await;
    let error = frames
        .iter()
        .find(|f| f["type"] == "error")
        .expect("an error frame");
    assert_eq!(error["error"], "presence_full", "{error}");
    assert_eq!(error["limit"], 2);
    assert_eq!(frames.last().unwrap()["count"], 2);
    // Data too large; a channel without presence; presence.join before subscribing.
    carol
        .send(json!({"type": "presence.join", "ref": 2, "channel": "doc:3", "data": {"x": "y".repeat(64)}}))
        .await;
    let e = carol.until("error").await.pop().unwrap();
    assert_eq!(
        (e["error"].as_str(), e["ref"].as_i64()),
        (Some("presence_data_too_large"), Some(2)),
        "{e}"
    );
    carol
        .send(json!({"type": "subscribe", "ref": 3, "channels": ["room:1"], "presence": true}))
        .await;
    let e = carol.until("error").await.pop().unwrap();
    assert_eq!(e["error"], "presence_disabled", "{e}");
    assert!(e["message"].as_str().unwrap().contains("doc:*"), "{e}");
    carol
        .send(json!({"type": "presence.join", "ref": 4, "channel": "doc:9"}))
        .await;
    let e = carol.until("error").await.pop().unwrap();
    assert_eq!(e["error"], "not_subscribed", "{e}");
    // Over HTTP: a channel without presence, a bad presence parameter.
    let (status, _, body) = get_json(
        &s.url(&format!("/presence?channel=room:1&token={}", token("bob", "B"))),
        &[],
    )
    .await;
    assert_error(status, &body, 400, "presence_disabled", &["room:1"]);
    let (status, _, body) = get_json(
        &s.url(&format!(
            "/realtime?channel=doc:3&presence=%7Bnope&token={}",
            token("bob", "B")
        )),
        &[],
    )
    .await;
    assert_error(status, &body, 400, "invalid_presence", &["JSON"]);
    // Reading presence needs the same right as reading the channel.
    let (status, _, body) = get_json(&s.url("/presence?channel=doc:3"), &[]).await;
    assert_error(status, &body, 401, "unauthenticated", &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_redis_see_each_other_and_a_killed_node_leaves_within_the_ttl() {
    let redis = RedisServer::start();
    let args = [
        "--jwt-secret",
        JWT_SECRET,
        "--presence",
        "doc:*",
        "--presence-ttl",
        "2",
    ];
    let mut one = Spawn::new()
        .redis(&redis.url())
        .args(&args)
        .name("one")
        .start()
        .await;
    let two = Spawn::new()
        .redis(&redis.url())
        .args(&args)
        .name("two")
        .start()
        .await;
    let (mut ada, snap) = member(&one.url(""), "ada", "doc:k", Some(json!({"at": 1}))).await;
    assert_eq!(ids(&snap), ["ada"]);
    next_presence(&mut ada).await; // her own join
                                   // Bob on the other node sees Ada, and Ada sees Bob join.
    let (mut bob, snap) = member(&two.url(""), "bob", "doc:k", Some(json!(true))).await;
    assert_eq!(ids(&snap), ["ada", "bob"], "{snap}");
    let joined = next_presence(&mut ada).await;
    assert_eq!(joined["member"]["id"], "bob", "{joined}");
    // Ada with a second tab on node two: one member.
    let (_ada2, snap) = member(&two.url(""), "ada", "doc:k", Some(json!(true))).await;
    assert_eq!(snap["members"][0]["connections"], 2, "{snap}");
    // Node one dies: Ada's connection there lapses, but her tab on node two keeps her present.
    // Kill it with a third member that lives only on node one.
    let (_carol, _) = member(&one.url(""), "carol", "doc:k", Some(json!(true))).await;
    // Bob hears his own join, then Carol's: Ada's second tab made no join.
    assert_eq!(next_presence(&mut bob).await["member"]["id"], "bob");
    let carol_joined = next_presence(&mut bob).await;
    assert_eq!(carol_joined["member"]["id"], "carol", "{carol_joined}");
    let killed = Instant::now();
    one.kill();
    loop {
        let f = bob
            .next_timeout(Duration::from_secs(10))
            .await
            .expect("bob's connection stays");
        if f["type"] == "presence.leave" {
            assert_eq!(
                f["member"]["id"], "carol",
                "only carol had no connection left: {f}"
            );
            break;
        }
    }
    let took = killed.elapsed();
    // --presence-ttl 2: lapsed within the ttl and a quarter, plus the sweep's own time.
    assert!(took < Duration::from_millis(4000), "leave after {took:?}");
    let (_, _, body) = get_json(
        &two.url(&format!("/presence?channel=doc:k&token={}", token("bob", "B"))),
        &[],
    )
    .await;
    let mut members: Vec<(String, u64)> = body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_string(),
                m["connections"].as_u64().unwrap(),
            )
        })
        .collect();
    members.sort();
    assert_eq!(members, [("ada".into(), 1), ("bob".into(), 1)], "{body}");
}

#[tokio::test]
async fn presence_entries_another_tool_wrote_reach_sse_and_websocket_as_one_line_or_null() {
    let store = Arc::new(MemoryStore::default());
    let s = TestServer::start(store.clone(), presence_config).await;
    let (mut ws, _) = member(&s.url(""), "ada", "doc:3", None).await;
    let url = format!(
        "{}&token={}&presence=",
        s.url("/realtime?channel=doc:3"),
        token("bob", "Bob")
    );
    let mut sse = SseReader::open(&url, None).await;
    sse.until("tidings.presence.snapshot").await;
    // bob's own join (SSE ?presence= joins) reaches ada first.
    assert_eq!(next_presence(&mut ws).await["member"]["id"], "bob");
    let stream = tidings::Channel::new("doc:3").unwrap().presence();
    let opts = tidings::store::AppendOptions::default();
    use tidings::Store as _;
    // Pretty-printed over three lines, then not an object, then not JSON.
    let pretty = "{\n  \"id\": \"eve\",\n  \"name\": \"Eve\"\n}";
    for data in [pretty, "\"eve\"", "{not json"] {
        store.append(&stream, "presence.join", data, opts).await.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 3 {
        got.push(next_presence(&mut ws).await["member"].clone());
    }
    assert_eq!(
        got,
        [json!({"id": "eve", "name": "Eve"}), Value::Null, Value::Null]
    );
    let mut members = Vec::new();
    while members.len() < 3 {
        let f = sse.next().await.expect("the stream stays open");
        let member = f.json()["member"].clone();
        // Its own join comes first.
        if f.event.as_deref() == Some("tidings.presence.join") && member["id"] != "bob" {
            members.push(member);
        }
    }
    assert_eq!(members, got, "one data: line each, the same members");
    // No member text leaked onto a line of its own.
    for line in sse.raw.lines() {
        assert!(
            line.is_empty()
                || ["event: ", "data: ", "id: ", "retry: "]
                    .iter()
                    .any(|f| line.starts_with(f)),
            "a line that is not an SSE field: {line:?}"
        );
    }
}
