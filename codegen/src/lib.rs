//! Schema loading and code generation for [tidings](https://github.com/tidings-rs/tidings)
//! event schemas.
//!
//! An event schema is one JSON file: `namespaces` maps namespace → event → the payload's JSON
//! Schema (2020-12), and `$defs` holds shared types referenced as `#/$defs/Name`. From it this
//! crate generates
//!
//! - Rust types ([`rust()`], feature `rust`, on by default): one type per payload (via
//!   [typify](https://docs.rs/typify)), implementing `tidings::Emittable` and
//!   `tidings::Payload`, plus an `Event` enum over all events;
//! - TypeScript ([`typescript_files()`]): a folder for the app's own tree with one type per
//!   payload, `EventMap`, `EventName`, `EVENT_NAMES` and a typed `Envelope` (`events.ts`), a
//!   `createClient` bound to the schema (`index.ts`), and bound React and Svelte layers with one
//!   hook per event (`react.ts`, `svelte.ts`), all importing only `@tidings/client`.
//!
//! [`Build`] writes both where an app keeps them, from a build script or from the
//! `tidings codegen` command, touching only files whose contents change.
//!
//! [`SchemaFile`] loads and checks a schema (names, references, type-name collisions) with
//! errors that name the file, the event and the problem; the tidings runtime uses it with
//! `default-features = false` to validate payloads against the same file.
//!
//! # In a build script
//!
//! ```toml
//! [dependencies]
//! tidings = "0.1"
//! serde = { version = "1", features = ["derive"] }
//! serde_json = "1"
//!
//! [build-dependencies]
//! tidings-codegen = "0.1"
//! ```
//!
//! ```no_run
//! // build.rs
//! # #[cfg(feature = "rust")]
//! fn main() {
//!     // Reads `<crate>/schema/events.json`, writes `$OUT_DIR/events.rs` and the TypeScript
//!     // folder `web/src/tidings/`, and asks cargo to rerun when the schema changes. A bad
//!     // schema fails the build with one line such as `schema/events.json: event
//!     // "chat.message": $ref "#/$defs/Nope" does not name an entry of $defs (at
//!     // /namespaces/chat/message/properties/user/$ref)`.
//!     let build = tidings_codegen::Build::new("schema/events.json")
//!         .rust("events.rs")
//!         .typescript("web/src/tidings");
//!     if let Err(e) = build.run() {
//!         eprintln!("error: {e}");
//!         std::process::exit(1);
//!     }
//! }
//! # #[cfg(not(feature = "rust"))]
//! # fn main() {}
//! ```
//!
//! ```ignore
//! // src/lib.rs
//! pub mod events {
//!     include!(concat!(env!("OUT_DIR"), "/events.rs"));
//! }
//!
//! use events::{ChatMessage, Event};
//! use tidings::{Emittable, Payload};
//!
//! assert_eq!(ChatMessage::NAME, "chat.message");
//! let event = Event::decode("chat.message", serde_json::json!({ "text": "hi", "user": "ann" }));
//! ```
//!
//! # TypeScript
//!
//! ```
//! let schema = tidings_codegen::SchemaFile::parse(
//!     r#"{ "namespaces": { "notification": { "alert": { "type": "string" } } } }"#,
//!     "events.json",
//! )?;
//! let files = tidings_codegen::typescript_files(&schema);
//! let ts = &files[0].contents; // events.ts
//! assert!(ts.contains("export type NotificationAlert = string;"));
//! assert!(ts.contains(r#"export const EVENT_NAMES = [
//!   "notification.alert",
//! ] as const"#));
//! # Ok::<(), tidings_codegen::SchemaError>(())
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod build;
mod schema;
mod typescript;

#[cfg(feature = "rust")]
mod rust;

pub use build::{Build, Error, FileState, Report};
pub use schema::{
    EventDef, PresenceDef, RefProblem, SchemaError, SchemaFile, SchemaItem, DEF_NAME_PATTERN, NAME_PATTERN,
    RESERVED_TYPE_NAMES,
};
pub use typescript::{
    typescript, typescript_files, typescript_index, typescript_react, typescript_svelte, TsFile,
    CLIENT_PACKAGE,
};

#[cfg(feature = "rust")]
pub use rust::{rust, CodegenError, RustOptions};

/// Generates Rust types for a schema from a build script: reads `schema_path` (relative to
/// `CARGO_MANIFEST_DIR`), writes `$OUT_DIR/<out_file_name>` (only when it changed), and prints
/// `cargo:rerun-if-changed=<schema_path>`. Short for
/// `Build::new(schema_path).rust(out_file_name).run()`; [`Build`] also writes TypeScript.
///
/// # Errors
///
/// As [`Build::run`].
#[cfg(feature = "rust")]
pub fn build(schema_path: &str, out_file_name: &str) -> Result<(), Error> {
    Build::new(schema_path).rust(out_file_name).run().map(|_| ())
}
