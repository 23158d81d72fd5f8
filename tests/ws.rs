//! The WebSocket transport, `GET /ws`, driven by tokio-tungstenite.

mod support;

use serde_json::json;
use support::*;
use tidings::MemoryStore;

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
