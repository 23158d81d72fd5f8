//! The traits that generated event types implement.
//!
//! `tidings-codegen` writes one Rust type per event payload and one [`Emittable`] enum over all
//! events. These traits are how the rest of tidings knows an event's wire name without a string
//! typed by hand, so emitting a payload to the wrong event cannot compile.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Something that can be emitted: it knows its event name and serializes to the payload JSON.
///
/// Implemented by every generated payload type and by the generated `Event` enum.
pub trait Emittable: Serialize {
    /// The event's wire name, `namespace.event` (e.g. `chat.message`).
    fn event_name(&self) -> &'static str;
}

/// A payload type of exactly one event, known at compile time.
///
/// Implemented by every generated payload type; lets receivers decode typed events
/// (`envelope.decode::<ChatMessage>()`).
pub trait Payload: Emittable + DeserializeOwned {
    /// The event's wire name, `namespace.event`.
    const NAME: &'static str;
}
