//! With the `demo` feature: the demo's types, from `schema/events.json`, exactly as an app's own
//! build script writes them (Rust into `OUT_DIR/events.rs` for `tidings::events`, TypeScript into
//! the demo app's tree). Without it (what a crate depending on `tidings` gets): nothing.
//!
//! A bad schema fails the build with one line naming the file, the event and the problem (no
//! backtrace: the error is printed, not returned through `main`).
fn main() {
    #[cfg(feature = "demo")]
    {
        let build = tidings_codegen::Build::new("schema/events.json")
            .rust("events.rs")
            .typescript("examples/chat/src/tidings");
        if let Err(e) = build.run() {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
