//! Embeds tidings in an axum app and emits typed events from Rust.
//!
//! ```sh
//! cargo run --example embed
//! curl -N 'http://127.0.0.1:3001/rt/realtime?channel=alerts'
//! ```
//!
//! Every two seconds the app emits a `notification.alert` (typed: the compiler checks the payload)
//! to the `alerts` channel; the tidings routes live under `/rt`.

use std::time::Duration;

use anyhow::Result;
use axum::routing::get;
use tidings::events::{ChatMessage, NotificationAlert};
use tidings::{Config, Tidings};

#[tokio::main]
async fn main() -> Result<()> {
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/events.json");
    let rt = Tidings::from_config(Config::default().schema(schema)).await?;

    let app = axum::Router::new()
        .route("/", get(|| async { "my app; realtime events under /rt" }))
        .nest("/rt", tidings::router(rt.clone()));

    let ticker = rt.clone();
    tokio::spawn(async move {
        for n in 1u64.. {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let alert: NotificationAlert = match format!("tick {n}").parse() {
                Ok(a) => a,
                Err(e) => return eprintln!("{e}"),
            };
            match ticker.channel("alerts").emit(alert).await {
                Ok(id) => println!("emitted tick {n} as {id}"),
                Err(e) => eprintln!("emit failed: {e}"),
            }
        }
    });

    // A message built from parts: constrained strings are checked when constructed.
    let hello = ChatMessage {
        text: "hello from Rust".parse()?,
        user: "example".parse()?,
        reply_to: None,
        mentions: vec![],
    };
    rt.channel("room:1").emit(hello).await?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    println!("listening on http://127.0.0.1:3001 (tidings under /rt)");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
