//! Dead links are noticed: the heartbeat is an event every client can see, announced in
//! `tidings.ready`; a client that stops reading is closed after the write timeout and its slot
//! is freed; clients that do not know the heartbeat (the npm `eventsource` package, `curl`,
//! `eventsource-stream`) are not disturbed by it.

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use support::{msg, Spawn, EMIT_KEY};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn streams(node: &support::Binary) -> u64 {
    let body: serde_json::Value = reqwest::get(node.url("/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["streams"]
        .as_u64()
        .unwrap_or_else(|| panic!("no streams in {body}"))
}

async fn wait_streams(node: &support::Binary, want: u64, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let now = streams(node).await;
        if now == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "streams stayed at {now}, not {want}, for {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_is_an_event_announced_in_ready() {
    let node = Spawn::new().args(&["--heartbeat", "1"]).start().await;
    // A third-party SSE parser: the heartbeat is a named event it hands over like any other.
    let response = reqwest::get(node.url("/realtime?channel=room:1")).await.unwrap();
    let mut events = eventsource_stream::EventStream::new(response.bytes_stream());
    let ready = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ready.event, "tidings.ready");
    let data: serde_json::Value = serde_json::from_str(&ready.data).unwrap();
    assert_eq!(data["heartbeat_ms"], 1000, "{data}");

    let started = Instant::now();
    let mut pings = 0;
    while pings < 2 {
        let ev = tokio::time::timeout(Duration::from_secs(3), events.next())
            .await
            .expect("a heartbeat within 3 s")
            .unwrap()
            .unwrap();
        assert_eq!(ev.event, "tidings.ping");
        assert_eq!(ev.data, "{}");
        // No id: a heartbeat does not move the client's Last-Event-ID.
        assert_eq!(ev.id, ready.id);
        pings += 1;
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_millis(3500),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_after_the_write_timeout() {
    let node = Spawn::new()
        .args(&["--write-timeout", "2", "--heartbeat", "1"])
        .start()
        .await;
    let addr = node
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();

    // A client that sends its request, reads the head, then never reads again; a small receive
    // buffer so the server's writes stop making progress sooner.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stuck = socket.connect(addr.parse().unwrap()).await.unwrap();
    stuck
        .write_all(b"GET /realtime?channel=big HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 512];
    let n = stuck.read(&mut head).await.unwrap();
    assert!(std::str::from_utf8(&head[..n])
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    wait_streams(&node, 1, Duration::from_secs(5)).await;

    // A reader that keeps up on another channel must not be affected.
    let mut healthy = support::SseReader::open(&node.url("/realtime?channel=small"), None).await;
    healthy.until("tidings.ready").await;
    wait_streams(&node, 2, Duration::from_secs(5)).await;

    // Megabytes for the stuck one (the largest chat.message is 2,000 characters): far more than
    // the socket buffers on both sides hold.
    let http = reqwest::Client::new();
    let text = "x".repeat(2000);
    for _ in 0..60 {
        let batch = (0..50).map(|_| {
            http.post(node.url("/emit"))
                .bearer_auth(EMIT_KEY)
                .json(&serde_json::json!({ "channel": "big", "event": "chat.message", "data": msg(&text) }))
                .send()
        });
        for r in futures_util::future::join_all(batch).await {
            assert_eq!(r.unwrap().status(), 200);
        }
    }
    let emitted = Instant::now();
    // Released within the write timeout (2 s) of its last write that made progress, plus the
    // time it took to fill the buffers; the healthy stream stays.
    let took = wait_streams(&node, 1, Duration::from_secs(8)).await;
    eprintln!("stuck stream released {took:?} after the last emit");
    assert!(emitted.elapsed() < Duration::from_secs(8));
    let id = node_emit(&node, "small").await;
    let f = healthy.next().await.unwrap();
    assert_eq!(f.json()["id"], id);
    drop(stuck);
}

async fn node_emit(node: &support::Binary, channel: &str) -> String {
    let r = reqwest::Client::new()
        .post(node.url("/emit"))
        .bearer_auth(EMIT_KEY)
        .json(&serde_json::json!({ "channel": channel, "event": "chat.message", "data": msg("hi") }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    body["id"].as_str().unwrap().to_string()
}
