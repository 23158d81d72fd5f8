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
//! - TypeScript declarations ([`typescript()`]): one type per payload, `EventMap`, `EventName`,
//!   `EVENT_NAMES` and a typed `Envelope`.
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
//! anyhow = "1"
//! ```
//!
//! ```no_run
//! // build.rs
//! # #[cfg(feature = "rust")]
//! fn main() -> anyhow::Result<()> {
//!     // Reads `<crate>/schema/events.json`, writes `$OUT_DIR/events.rs`, and asks cargo to
//!     // rerun when the schema changes. A bad schema fails the build with a message such as
//!     // `schema/events.json: event "chat.message": $ref "#/$defs/Nope" does not name an
//!     // entry of $defs (at /namespaces/chat/message/properties/user/$ref)`.
//!     tidings_codegen::build("schema/events.json", "events.rs")?;
//!     Ok(())
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
//! let ts = tidings_codegen::typescript(&schema);
//! assert!(ts.contains("export type NotificationAlert = string;"));
//! assert!(ts.contains(r#"export const EVENT_NAMES = [
//!   "notification.alert",
//! ] as const"#));
//! # Ok::<(), tidings_codegen::SchemaError>(())
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod schema;
mod typescript;

#[cfg(feature = "rust")]
mod rust;

pub use schema::{
    EventDef, RefProblem, SchemaError, SchemaFile, SchemaItem, DEF_NAME_PATTERN, NAME_PATTERN,
    RESERVED_TYPE_NAMES,
};
pub use typescript::{typescript, typescript_react};

#[cfg(feature = "rust")]
pub use rust::{rust, CodegenError, RustOptions};

/// Why [`build`] failed. Displays as the underlying message (which names the schema file), so
/// a build script returning it prints one clear line.
#[cfg(feature = "rust")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The schema could not be read or was rejected.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// Rust code could not be generated.
    #[error(transparent)]
    Codegen(#[from] CodegenError),
    /// An environment variable that cargo sets for build scripts is missing.
    #[error("environment variable {0} is not set; call tidings_codegen::build from a build script")]
    Env(&'static str),
    /// The output file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The output file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Generates Rust types for a schema from a build script: reads `schema_path` (relative to
/// `CARGO_MANIFEST_DIR`), writes `$OUT_DIR/<out_file_name>`, and prints
/// `cargo:rerun-if-changed=<schema_path>` (also when the schema is rejected, so fixing it
/// reruns the script).
///
/// The generated code implements the traits of `::tidings`; use [`rust()`] with
/// [`RustOptions::tidings_crate`] for another path.
///
/// # Errors
///
/// [`Error::Schema`] when the schema cannot be read or is invalid, [`Error::Codegen`] when
/// typify cannot handle it, [`Error::Env`] outside a build script, [`Error::Write`] when the
/// output cannot be written.
#[cfg(feature = "rust")]
pub fn build(schema_path: &str, out_file_name: &str) -> Result<(), Error> {
    use std::path::PathBuf;

    println!("cargo:rerun-if-changed={schema_path}");
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").ok_or(Error::Env("CARGO_MANIFEST_DIR"))?;
    let out_dir = std::env::var_os("OUT_DIR").ok_or(Error::Env("OUT_DIR"))?;

    let text = std::fs::read_to_string(PathBuf::from(manifest_dir).join(schema_path)).map_err(|source| {
        SchemaError::Read {
            origin: schema_path.to_string(),
            source,
        }
    })?;
    let schema = SchemaFile::parse(&text, schema_path)?;
    let code = rust(&schema, &RustOptions::default())?;

    let path = PathBuf::from(out_dir).join(out_file_name);
    std::fs::write(&path, code).map_err(|source| Error::Write { path, source })?;
    Ok(())
}
