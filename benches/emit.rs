//! Hot path of an emit: validate, encode, append; then the whole `Tidings::emit_json` path on the
//! embedded store; and the cost of subscribers' filters on one event. Whole-system numbers (HTTP, Redis, fan-out) come from `bench/run.sh`.
//!
//! ```sh
//! cargo bench -p tidings --bench emit              # all of them, about 3 s of measurement each
//! cargo bench -p tidings --bench emit -- validate  # only those whose name contains "validate"
//! cargo bench -p tidings --bench emit -- filter    # one event past 1,000 subscribers' filters
//! ```

// criterion_group! generates an undocumented pub fn; a bench target has no public API to document.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::FutureExt;
use serde_json::{json, Value};
use tidings::store::AppendOptions;
use tidings::{Channel, Config, Entry, Envelope, MemoryStore, Registry, Store, StreamId, Tidings};
use tidings_test_events::ChatMessage;

const SCHEMA: &str = tidings_test_events::SCHEMA_PATH;

fn payload() -> Value {
    json!({ "text": "hello, room", "user": "ada", "mentions": ["grace", "linus"] })
}

fn typed() -> ChatMessage {
    ChatMessage {
        text: "hello, room".parse().expect("valid text"),
        user: "ada".parse().expect("valid user"),
        reply_to: None,
        mentions: vec![
            "grace".parse().expect("valid user"),
            "linus".parse().expect("valid user"),
        ],
    }
}

fn validate(c: &mut Criterion) {
    let registry = Registry::load(SCHEMA).expect("schema loads");
    let good = payload();
    let bad = json!({ "text": "", "user": "ada", "extra": 1 });
    let mut g = c.benchmark_group("validate");
    g.throughput(Throughput::Elements(1));
    g.bench_function("chat.message ok", |b| {
        b.iter(|| {
            registry
                .validate(black_box("chat.message"), black_box(&good))
                .is_ok()
        })
    });
    // The refusal path collects every violation with its JSON pointer and message.
    g.bench_function("chat.message invalid", |b| {
        b.iter(|| {
            registry
                .validate(black_box("chat.message"), black_box(&bad))
                .is_err()
        })
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let msg = typed();
    let value = payload();
    let body =
        serde_json::to_vec(&json!({ "channel": "room:1", "event": "chat.message", "data": payload() }))
            .expect("serializes");
    let channel = Channel::new("room:1").expect("valid channel");
    let entry = Entry {
        id: "1795371356358-0".parse::<StreamId>().expect("valid id"),
        event: "chat.message".into(),
        data: serde_json::to_string(&value).expect("serializes").into(),
    };
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1));
    // What POST /emit does first: parse the request body.
    g.bench_function("parse emit body", |b| {
        b.iter(|| serde_json::from_slice::<Value>(black_box(&body)).expect("parses"))
    });
    // ChannelHandle::emit: typed payload -> Value (validated), then Value -> stored text.
    g.bench_function("ChatMessage to Value", |b| {
        b.iter(|| serde_json::to_value(black_box(&msg)).expect("serializes"))
    });
    g.bench_function("ChatMessage to string", |b| {
        b.iter(|| serde_json::to_string(black_box(&msg)).expect("serializes"))
    });
    g.bench_function("Value to string", |b| {
        b.iter(|| serde_json::to_string(black_box(&value)).expect("serializes"))
    });
    // What a history read or a replay hands out: the envelope JSON of a stored entry.
    g.bench_function("envelope JSON", |b| {
        b.iter(|| {
            let env = Envelope::from_entry(black_box(&channel), black_box(&entry));
            serde_json::to_string(&env).expect("serializes")
        })
    });
    g.finish();
}

fn append(c: &mut Criterion) {
    let store = MemoryStore::default();
    let channels: Vec<Channel> = (0..1000)
        .map(|i| Channel::new(&format!("room:{i}")).expect("valid channel"))
        .collect();
    let data = serde_json::to_string(&payload()).expect("serializes");
    let mut g = c.benchmark_group("MemoryStore::append");
    g.throughput(Throughput::Elements(1));
    // The memory store answers synchronously: poll the future once, no runtime in the number.
    g.bench_function("one channel (trimmed at 1000)", |b| {
        b.iter(|| {
            store
                .append(
                    black_box(&channels[0]),
                    "chat.message",
                    black_box(&data),
                    AppendOptions::default(),
                )
                .now_or_never()
                .expect("ready at once")
                .expect("appends")
        })
    });
    let mut i = 0usize;
    g.bench_function("1000 channels round robin", |b| {
        b.iter(|| {
            i = (i + 1) % channels.len();
            store
                .append(
                    black_box(&channels[i]),
                    "chat.message",
                    black_box(&data),
                    AppendOptions::default(),
                )
                .now_or_never()
                .expect("ready at once")
                .expect("appends")
        })
    });
    g.finish();
}

fn emit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let tidings = {
        let _enter = rt.enter();
        let registry = Registry::load(SCHEMA).expect("schema loads");
        Tidings::new(registry, Arc::new(MemoryStore::default()), Config::default())
    };
    let channel = Channel::new("room:1").expect("valid channel");
    let value = payload();
    let handle = tidings.channel("room:1");
    let msg = typed();
    let mut g = c.benchmark_group("Tidings");
    g.throughput(Throughput::Elements(1));
    // The path POST /emit takes after parsing: validate, serialize, size check, append.
    g.bench_function("emit_json chat.message (memory)", |b| {
        b.to_async(&rt).iter(|| async {
            tidings
                .emit_json(black_box(&channel), "chat.message", black_box(&value))
                .await
                .expect("emits")
        })
    });
    // The typed library path: ChatMessage -> Value, then the same.
    g.bench_function("channel.emit(ChatMessage) (memory)", |b| {
        b.to_async(&rt)
            .iter(|| async { handle.emit(black_box(msg.clone())).await.expect("emits") })
    });
    g.finish();
    tidings.close();
}

/// One live event past 1,000 subscribers' filters, as the hub hands it on: its payload parsed
/// once, then every filter tested (one of them passes), next to parsing alone.
fn filter(c: &mut Criterion) {
    let filters: Vec<tidings::Filter> = (0..1000)
        .map(|i| tidings::Filter::parse(&json!({ "user": format!("u{i}") })).expect("a filter"))
        .collect();
    let data = r#"{"user":"u500","text":"12345 1733000000000000000"}"#;
    let mut g = c.benchmark_group("filter");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse the payload", |b| {
        b.iter(|| serde_json::from_str::<Value>(black_box(data)).is_ok())
    });
    g.bench_function("parse, then 1000 filters", |b| {
        b.iter(|| {
            let v: Value = serde_json::from_str(black_box(data)).expect("json");
            filters
                .iter()
                .filter(|f| f.matches("room:1", "chat.message", &v))
                .count()
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = validate, encode, append, emit, filter
}
criterion_main!(benches);
