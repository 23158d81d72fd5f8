//! The build script an app writes: the test schema's Rust types into `OUT_DIR/events.rs`.
fn main() {
    if let Err(e) = tidings_codegen::Build::new("events.json").rust("events.rs").run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
