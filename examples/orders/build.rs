//! Generates the shop's event types from `schema/events.json`: Rust into `OUT_DIR/events.rs`
//! (for `src/main.rs`), TypeScript into `web/src/tidings/` (for the page). TypeScript files are
//! written only when the schema changes them, so the Vite dev server does not reload on every
//! `cargo build`.
fn main() {
    let build = tidings_codegen::Build::new("schema/events.json")
        .rust("events.rs")
        .typescript("web/src/tidings");
    if let Err(e) = build.run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
