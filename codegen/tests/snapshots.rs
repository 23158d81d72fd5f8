//! Snapshots of the generated Rust and TypeScript folder (events, index, React, Svelte) for the
//! test schema and a feature fixture.
//!
//! Review changes with `INSTA_UPDATE=always cargo test -p tidings-codegen --test snapshots`
//! followed by `git diff codegen/tests/snapshots`.

use std::path::Path;

use tidings_codegen::{
    rust, typescript, typescript_index, typescript_react, typescript_svelte, RustOptions, SchemaFile,
};

fn load(relative: &str) -> SchemaFile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    let text = std::fs::read_to_string(&path).unwrap();
    // A stable origin, so snapshots do not depend on the checkout's location.
    SchemaFile::parse(&text, relative).unwrap_or_else(|e| panic!("{e}"))
}

/// tidings' own test schema (`tests/events/events.json` at the repository root).
fn test_schema() -> SchemaFile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/events/events.json");
    let text = std::fs::read_to_string(path).unwrap();
    SchemaFile::parse(&text, "tests/events/events.json").unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn test_schema_typescript() {
    insta::assert_snapshot!(typescript(&test_schema()));
}

#[test]
fn test_schema_typescript_index() {
    insta::assert_snapshot!(typescript_index(&test_schema()));
}

#[test]
fn test_schema_typescript_react() {
    insta::assert_snapshot!(typescript_react(&test_schema()));
}

#[test]
fn test_schema_typescript_svelte() {
    insta::assert_snapshot!(typescript_svelte(&test_schema()));
}

#[test]
fn test_schema_rust() {
    insta::assert_snapshot!(rust(&test_schema(), &RustOptions::default()).unwrap());
}

#[test]
fn features_typescript() {
    insta::assert_snapshot!(typescript(&load("tests/fixtures/features.json")));
}

#[test]
fn features_rust() {
    let schema = load("tests/fixtures/features.json");
    insta::assert_snapshot!(rust(&schema, &RustOptions::default()).unwrap_or_else(|e| panic!("{e}")));
}
