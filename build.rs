//! Generates Rust types for `schema/events.json` into `OUT_DIR/events.rs`.
//!
//! A bad schema fails the build with one line naming the file, the event and the problem (no
//! backtrace: the error is printed, not returned through `main`).
fn main() {
    if let Err(e) = tidings_codegen::build("schema/events.json", "events.rs") {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
