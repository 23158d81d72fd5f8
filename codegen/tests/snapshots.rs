//! Snapshots of the generated Rust, TypeScript and React hooks for the demo schema and a feature fixture.
//!
//! Review changes with `INSTA_UPDATE=always cargo test -p tidings-codegen --test snapshots`
//! followed by `git diff codegen/tests/snapshots`.

use std::path::Path;

use tidings_codegen::{rust, typescript, typescript_react, RustOptions, SchemaFile};

fn load(relative: &str) -> SchemaFile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    let text = std::fs::read_to_string(&path).unwrap();
    // A stable origin, so snapshots do not depend on the checkout's location.
    SchemaFile::parse(&text, relative).unwrap_or_else(|e| panic!("{e}"))
}

fn demo() -> SchemaFile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema/events.json");
    let text = std::fs::read_to_string(path).unwrap();
    SchemaFile::parse(&text, "schema/events.json").unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn demo_typescript() {
    insta::assert_snapshot!(typescript(&demo()));
}

#[test]
fn demo_typescript_react() {
    insta::assert_snapshot!(typescript_react(&demo()));
}

#[test]
fn demo_rust() {
    insta::assert_snapshot!(rust(&demo(), &RustOptions::default()).unwrap());
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
