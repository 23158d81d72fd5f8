//! The shop's own API, against the real binary: a good order becomes a typed `order.placed` in
//! the channel's history, followed by its status changes; a bad one is a 400 that says what was
//! wrong, and stores nothing.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Shop(Child, String);

impl Drop for Shop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start() -> Shop {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_orders"))
        .args(["--bind", &format!("127.0.0.1:{port}"), "--step-ms", "100"])
        .env_remove("REDIS_URL")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let shop = Shop(child, format!("http://127.0.0.1:{port}"));
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(r) = reqwest::get(format!("{}/rt/health", shop.1)).await {
            if r.status() == 200 {
                return shop;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the shop did not start");
}

async fn history(shop: &Shop) -> Vec<serde_json::Value> {
    let body: serde_json::Value = reqwest::get(format!("{}/rt/history?channel=orders", shop.1))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["entries"].as_array().unwrap().clone()
}

#[tokio::test]
async fn orders_become_typed_events_and_bad_ones_are_refused() {
    let shop = start().await;
    let http = reqwest::Client::new();
    let post = |body: serde_json::Value| http.post(format!("{}/api/orders", shop.1)).json(&body).send();

    for (body, says) in [
        (
            serde_json::json!({ "customer": "", "sku": "mug-1", "qty": 1 }),
            "customer: ",
        ),
        (
            serde_json::json!({ "customer": "ada", "sku": "MUG", "qty": 1 }),
            "sku: ",
        ),
        (
            serde_json::json!({ "customer": "ada", "sku": "mug-1", "qty": 0 }),
            "qty must be at least 1",
        ),
    ] {
        let r = post(body.clone()).await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let err: serde_json::Value = r.json().await.unwrap();
        assert_eq!(err["error"], "invalid_order");
        assert!(err["message"].as_str().unwrap().starts_with(says), "{err}");
    }
    assert!(
        history(&shop).await.is_empty(),
        "a refused order stored something"
    );

    let r = post(serde_json::json!({ "customer": "ada", "sku": "mug-1", "qty": 2, "note": "gift" }))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["id"], 1);

    let deadline = Instant::now() + Duration::from_secs(10);
    let entries = loop {
        let entries = history(&shop).await;
        if entries.len() == 3 || Instant::now() > deadline {
            break entries;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let events: Vec<&str> = entries.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["order.placed", "order.status", "order.status"]);
    assert_eq!(
        entries[0]["data"],
        serde_json::json!({
            "id": 1, "customer": { "name": "ada" }, "lines": [{ "sku": "mug-1", "qty": 2 }],
            "total_cents": 2500, "note": "gift"
        })
    );
    assert_eq!(
        entries[1]["data"],
        serde_json::json!({ "id": 1, "status": "packed" })
    );
    assert_eq!(
        entries[2]["data"],
        serde_json::json!({ "id": 1, "status": "shipped", "carrier": "Parcel Co." })
    );
}
