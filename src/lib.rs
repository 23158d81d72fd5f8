//! tidings: typed realtime events for web apps.
//!
//! A team defines its events once, in a JSON Schema file (`schema/events.json`). From it,
//! `tidings-codegen` writes Rust types and TypeScript typings; at run time every emit is
//! validated against the same schema, appended to a capped stream per channel, and pushed to
//! browsers over Server-Sent Events or WebSocket. A client that drops and reconnects gets exactly what it
//! missed, no more and no less, or an explicit signal when history no longer reaches back.
//!
//! # How data flows
//!
//! ```text
//!  emit (Rust: ChannelHandle::emit, HTTP: POST /emit)
//!    │  schema::Registry::validate      one compiled validator per event
//!    ▼
//!  store::Store::append                 RedisStore (one Redis Stream per channel, MAXLEN ~ N)
//!    │                                  or MemoryStore (same semantics, in process)
//!    ▼
//!  hub (one tail reader per node)       Store::tail over every watched channel
//!    │  bounded queue per subscriber
//!    ▼
//!  session (one task per connection)    replay from the cursor, then live; every frame
//!    │                                  carries the connection's cursor
//!    ▼  sse (GET /realtime) | ws (GET /ws)  two encoders of the same frames
//!  browser EventSource / WebSocket      reconnects with its cursor and resumes exactly
//! ```
//!
//! # The parts
//! - [`schema`]: loading the schema file and validating payloads ([`Registry`]).
//! - `events` (feature `demo` only): the types generated from this repository's demo schema.
//! - [`store`]: the [`Store`] trait, [`RedisStore`] and [`MemoryStore`].
//! - [`Tidings`] and [`ChannelHandle`]: the handle an application emits through.
//! - [`router`] and [`serve`]: the HTTP, SSE and WebSocket endpoints. Inside, a connection's
//!   session (the `session` module) decides what to tell the client as frames (the `frame`
//!   module: event, ready, reset, lagged, expired, ping, and the WebSocket answers), and a
//!   transport encodes them: `sse` as an event stream, `ws` as JSON messages, which also reads
//!   the client's requests (subscribe, unsubscribe, emit, ping).
//! - [`auth`]: the [`Authorizer`] hook, the built-in [`JwtAuthorizer`], private channels.
//! - [`Limits`]: what one request, client or publisher may ask for (channels, bytes, streams per
//!   node and per identity, emits per second), each refusal a JSON 4xx naming the limit.
//! - [`Cursor`], [`StreamId`], [`Channel`]: the values that travel on the wire.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tidings::{Config, Tidings};
//!
//! let rt = Tidings::from_config(Config::default().schema("schema/events.json")).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! tidings::serve(listener, rt, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

extern crate self as tidings;

pub mod auth;
mod channel;
mod config;
mod cursor;
mod envelope;
mod filter;
mod frame;
mod http;
mod hub;
mod id;
mod limits;
mod payload;
mod presence;
mod realtime;
pub mod schema;
mod server;
mod session;
mod sse;
pub mod store;
mod ws;

pub use auth::{Action, AuthError, AuthRequest, Authorizer, Identity, JwtAuthorizer};
pub use channel::{Channel, ChannelError, DEFAULT_MAX_CHANNEL_LEN, MAX_CHANNEL_LEN};
pub use config::{Config, Limits, LimitsError};
pub use cursor::{Cursor, CursorError, MAX_CURSOR_LEN};
pub use envelope::Envelope;
pub use filter::{Filter, FilterError, MAX_FILTER_BYTES, MAX_FILTER_DEPTH, MAX_FILTER_TESTS};
pub use http::{router, ApiError};
pub use id::{Epoch, ParseEpochError, ParseIdError, ParsePositionError, Position, StreamId};
pub use payload::{Emittable, Payload};
pub use presence::{Member, PresenceError, PresenceSnapshot};
pub use realtime::{
    ChannelHandle, EmitError, EmitOptions, HistoryPage, StartError, Tidings, MAX_HISTORY_SCAN,
    MAX_IDEMPOTENCY_KEY_LEN,
};
pub use schema::Registry;
pub use server::serve;
pub use store::{
    Appended, Entry, MemoryStore, Range, RedisOptions, RedisStore, Retention, Store, StoreError, TailMode,
};

#[cfg(feature = "demo")]
pub mod events {
    //! Types generated from this repository's demo schema (`schema/events.json`) by
    //! `tidings-codegen`, exactly as an application's own `build.rs` generates its own. Only
    //! with the `demo` feature, for the examples.
    include!(concat!(env!("OUT_DIR"), "/events.rs"));
}
