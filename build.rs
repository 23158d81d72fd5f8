//! Generates Rust types for `schema/events.json` into `OUT_DIR/events.rs`.
fn main() -> anyhow::Result<()> {
    tidings_codegen::build("schema/events.json", "events.rs")?;
    Ok(())
}
