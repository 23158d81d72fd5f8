//! The Rust generated for `tests/fixtures/features.json` compiles and behaves.
//!
//! `tests/generated/features.rs` is committed output; `committed_output_is_current` fails when
//! it is stale. Regenerate with `TIDINGS_BLESS=1 cargo test -p tidings-codegen --test compile`.

use std::path::Path;

use serde_json::json;
use tidings_codegen::{rust, RustOptions, SchemaFile};

/// Stand-ins for the traits of the `tidings` crate, which this crate cannot depend on.
mod tidings {
    pub trait Emittable: serde::Serialize {
        fn event_name(&self) -> &'static str;
    }
    pub trait Payload: Emittable + serde::de::DeserializeOwned {
        const NAME: &'static str;
    }
}

#[allow(dead_code, clippy::all)]
mod generated {
    include!("generated/features.rs");
}

use generated::*;
use tidings::{Emittable, Payload};

#[test]
fn committed_output_is_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(dir.join("tests/fixtures/features.json")).unwrap();
    let schema = SchemaFile::parse(&text, "tests/fixtures/features.json").unwrap();
    let opts = RustOptions::default().tidings_crate("crate::tidings");
    let fresh = rust(&schema, &opts).unwrap();
    let path = dir.join("tests/generated/features.rs");
    if std::env::var_os("TIDINGS_BLESS").is_some() {
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "{} is stale; regenerate it with \
         `TIDINGS_BLESS=1 cargo test -p tidings-codegen --test compile`",
        path.display()
    );
}

#[test]
fn names_and_traits() {
    assert_eq!(OrderPlaced::NAME, "order.placed");
    assert_eq!(MetricsFlag::NAME, "metrics.flag");
    assert_eq!(Event::NAMES.len(), 8);
    assert_eq!(Event::NAMES[0], "order.placed");
    let flag = MetricsFlag::Boolean(true);
    assert_eq!(flag.event_name(), "metrics.flag");
    let event = Event::from(flag);
    assert_eq!(event.event_name(), "metrics.flag");
    assert_eq!(serde_json::to_value(&event).unwrap(), json!(true));
}

#[test]
fn decode_follows_the_schema() {
    let placed = json!({
        "id": "ord_1",
        "quantity": 2,
        "price": 9.5,
        "note": null,
        "lines": [{ "sku": "a", "count": 2 }],
        "status": "in-transit",
        "kind": "retail",
        "shipping-address": { "street": "Main St 1", "city": "Oslo" }
    });
    let Some(Ok(Event::OrderPlaced(order))) = Event::decode("order.placed", placed.clone()) else {
        panic!("order.placed did not decode");
    };
    assert_eq!(order.quantity.get(), 2);
    assert_eq!(order.status, Status::InTransit);
    assert_eq!(order.shipping_address.unwrap().city, "Oslo");

    // `minimum: 1` on an integer, and `additionalProperties: false`.
    let mut zero = placed.clone();
    zero["quantity"] = json!(0);
    assert!(matches!(Event::decode("order.placed", zero), Some(Err(_))));
    let mut extra = placed;
    extra["surprise"] = json!(1);
    assert!(matches!(Event::decode("order.placed", extra), Some(Err(_))));

    // oneOf with a `const` discriminator becomes an internally tagged enum.
    let cancelled = Event::decode("order.cancelled", json!({ "by": "system", "reason": "fraud" }));
    assert!(matches!(
        cancelled,
        Some(Ok(Event::OrderCancelled(OrderCancelled::System { .. })))
    ));

    // `pattern` is enforced (through regress).
    let ok = Event::decode("metrics.tagged", json!({ "at": 1, "label": "abc" }));
    assert!(matches!(ok, Some(Ok(_))));
    let bad = Event::decode("metrics.tagged", json!({ "at": 1, "label": "ABC" }));
    assert!(matches!(bad, Some(Err(_))));

    // additionalProperties with a schema keeps the extra fields.
    let Some(Ok(Event::MetricsSample(sample))) =
        Event::decode("metrics.sample", json!({ "value": 1.5, "at": 7, "host": "a" }))
    else {
        panic!("metrics.sample did not decode");
    };
    assert_eq!(sample.extra["host"], "a");

    assert!(Event::decode("metrics.level", json!(4)).unwrap().is_err());
    assert!(Event::decode("metrics.flag", json!(null)).unwrap().is_ok());
    assert!(Event::decode("metrics.nope", json!(1)).is_none());
}
