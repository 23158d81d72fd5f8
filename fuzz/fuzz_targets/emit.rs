//! The `POST /emit` decoding and validation path never panics on arbitrary bytes: the body is
//! read as `{"channel","event","data"}` JSON (unknown fields refused, as the server does), the
//! channel is checked, the payload is validated against `schema/events.json`, then serialized as
//! the store would receive it. Errors are formatted, since the server puts them in 4xx bodies.
//!
//! Any JSON value that is not an emit body is also validated against every event of the schema,
//! so the fuzzer reaches the validators without first having to guess an event name.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tidings::{Channel, Registry};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct EmitBody {
    channel: String,
    event: String,
    data: Value,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schema/events.json");
        Registry::load(path).expect("demo schema loads")
    })
}

fn check(registry: &Registry, event: &str, data: &Value) {
    match registry.validate(event, data) {
        Ok(()) => {
            // What `Tidings::emit_json` hands to the store; it must read back as JSON.
            // (Not compared for equality: serde_json without `float_roundtrip` may move a float
            // by one ulp, which is serde_json's documented behaviour, not a tidings bug.)
            let text = serde_json::to_string(data).expect("a validated payload serializes");
            serde_json::from_str::<Value>(&text).expect("serialized payload parses");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let registry = registry();
    match serde_json::from_slice::<EmitBody>(data) {
        Ok(body) => {
            if let Err(e) = Channel::new(&body.channel) {
                let _ = e.to_string();
                return;
            }
            check(registry, &body.event, &body.data);
        }
        Err(e) => {
            let _ = e.to_string();
            if let Ok(value) = serde_json::from_slice::<Value>(data) {
                let events: Vec<String> = registry.event_names().map(str::to_owned).collect();
                for event in &events {
                    check(registry, event, &value);
                }
            }
        }
    }
});
