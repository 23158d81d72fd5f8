//! The generated Rust, as an app gets it: `tidings_test_events` is a crate whose build script
//! runs `tidings_codegen::Build` on the test schema (`tests/events/events.json`), the way an
//! app's does. Its types know their event names, decode what the schema allows and refuse what it
//! does not; bad schemas fail with clear messages. (The TypeScript folders are checked with
//! `tidings codegen --check` in `cli/tests/codegen.rs`.)

use std::path::Path;

use serde_json::json;
use tidings::{Emittable, Payload};
use tidings_codegen::{SchemaError, SchemaFile};
use tidings_test_events::{
    Availability, ChatMessage, ChatTyping, Event, NotificationAlert, PresenceStatus, UserName,
};

const SCHEMA: &str = "tests/events/events.json";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn payload_types_know_their_event_names() {
    assert_eq!(ChatMessage::NAME, "chat.message");
    assert_eq!(ChatTyping::NAME, "chat.typing");
    assert_eq!(NotificationAlert::NAME, "notification.alert");
    assert_eq!(PresenceStatus::NAME, "presence.status");
    assert_eq!(
        Event::NAMES,
        [
            "chat.message",
            "chat.typing",
            "notification.alert",
            "presence.status"
        ]
    );

    let user: UserName = "ann".parse().unwrap();
    let typing = ChatTyping { user, active: true };
    assert_eq!(typing.event_name(), "chat.typing");
    let event = Event::from(typing.clone());
    assert_eq!(event.name(), "chat.typing");
    assert_eq!(event.event_name(), "chat.typing");
    // The enum serializes as the bare payload.
    assert_eq!(
        serde_json::to_value(&event).unwrap(),
        json!({ "user": "ann", "active": true })
    );
    assert_eq!(event, Event::ChatTyping(typing));
}

#[test]
fn decode_accepts_valid_payloads() {
    let decoded = Event::decode(
        "chat.message",
        json!({ "text": "hi", "user": "ann", "mentions": ["bob"] }),
    );
    let Some(Ok(Event::ChatMessage(message))) = decoded else {
        panic!("chat.message did not decode: {decoded:?}");
    };
    assert_eq!(message.text.as_str(), "hi");
    assert_eq!(message.user.as_str(), "ann");
    assert_eq!(message.mentions.len(), 1);
    assert_eq!(message.reply_to, None);

    let Some(Ok(Event::PresenceStatus(status))) =
        Event::decode("presence.status", json!({ "user": "ann", "status": "away" }))
    else {
        panic!("presence.status did not decode");
    };
    assert_eq!(status.status, Availability::Away);

    let Some(Ok(Event::NotificationAlert(alert))) = Event::decode("notification.alert", json!("Deploy at 5"))
    else {
        panic!("notification.alert did not decode");
    };
    assert_eq!(alert.as_str(), "Deploy at 5");
}

#[test]
fn decode_rejects_unknown_names_and_wrong_shapes() {
    assert!(Event::decode("chat.nope", json!({})).is_none());
    assert!(Event::decode("chat", json!({})).is_none());

    for (name, data) in [
        ("chat.message", json!({ "user": "ann" })), // missing text
        ("chat.message", json!({ "text": 1, "user": "ann" })), // wrong type
        ("chat.message", json!({ "text": "", "user": "ann" })), // minLength
        ("chat.message", json!({ "text": "a", "user": "ann", "x": 1 })), // additionalProperties
        ("chat.typing", json!({ "user": "ann", "active": "yes" })),
        ("presence.status", json!({ "user": "ann", "status": "busy" })), // not in the enum
        ("notification.alert", json!("x".repeat(281))),                  // maxLength
    ] {
        let decoded = Event::decode(name, data.clone());
        assert!(
            matches!(decoded, Some(Err(_))),
            "{name} {data} decoded: {decoded:?}"
        );
    }
}

#[test]
fn typed_decode_through_the_payload_trait() {
    fn decode<P: Payload>(data: serde_json::Value) -> Result<P, serde_json::Error> {
        serde_json::from_value(data)
    }
    let typing: ChatTyping = decode(json!({ "user": "ann", "active": false })).unwrap();
    assert!(!typing.active);
    assert!(decode::<ChatTyping>(json!({ "user": "ann" })).is_err());
}

#[test]
fn bad_schemas_fail_with_a_clear_message() {
    let text =
        std::fs::read_to_string(root().join(SCHEMA))
            .unwrap()
            .replacen("#/$defs/UserName", "#/$defs/Nope", 1);
    let e = SchemaFile::parse(&text, SCHEMA).unwrap_err();
    assert!(matches!(e, SchemaError::InvalidRef { .. }));
    assert_eq!(e.event(), Some("chat.message"));
    assert_eq!(
        e.to_string(),
        "tests/events/events.json: event \"chat.message\": $ref \"#/$defs/Nope\" does not name an \
         entry of $defs (at /namespaces/chat/message/properties/user/$ref)"
    );

    let e = SchemaFile::parse(r#"{ "namespaces": { "chat": { "Message": {} } } }"#, "x.json").unwrap_err();
    assert_eq!(
        e.to_string(),
        "x.json: event \"chat.Message\": invalid event name \"Message\": names must match \
         [a-z][a-z0-9_]*"
    );

    let e = SchemaFile::parse("{ \"namespaces\": ", "x.json").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("x.json: invalid JSON at line 1, column 16: EOF while parsing a value"),
        "{e}"
    );
}
