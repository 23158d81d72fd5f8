//! `tidings codegen`, as an app uses it: the committed TypeScript folders are current
//! (`--check`), `--check` fails on a stale folder, and a fresh app outside this repository gets
//! TypeScript and Rust typed by its own schema, where a wrong event or field does not compile.
//!
//! The TypeScript checks run this repository's `tsc` (`node_modules`, from `npm ci` at the
//! repository root, which the test command runs first); the Rust app is built by cargo, offline, with
//! this workspace's `Cargo.lock`, in this workspace's target directory (so it reuses the
//! dependencies the workspace compiled, where their features agree).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn tidings(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(args)
        .current_dir(dir)
        .env_remove("TIDINGS_SCHEMA")
        .output()
        .expect("run tidings")
}

/// This workspace's target directory (tests run as `<target>/<profile>/deps/<test>`): the fresh
/// Rust app builds there too, so it reuses what the workspace compiled where features agree.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every TypeScript folder the repository commits, with the directory its generator runs in:
/// the tests' (written by `tidings codegen`), the demo's (root `build.rs`, feature `demo`) and the
/// orders example's (its `build.rs`). Regenerate one with the command this test prints.
#[test]
fn committed_typescript_folders_are_current() {
    let root = repo();
    for (dir, schema, out) in [
        (".", "tests/events/events.json", "clients/test/generated"),
        (".", "schema/events.json", "examples/chat/src/tidings"),
        ("examples/orders", "schema/events.json", "web/src/tidings"),
    ] {
        let cwd = root.join(dir);
        if !cwd.join(schema).exists() {
            panic!("{dir}/{schema} is missing");
        }
        let out_check = tidings(
            &cwd,
            &["codegen", "--schema", schema, "--typescript", out, "--check"],
        );
        assert!(
            out_check.status.success(),
            "{dir}/{out} is stale; regenerate it with `(cd {dir} && tidings codegen --schema {schema} \
             --typescript {out})` (or build the crate whose build.rs writes it):\n{}",
            text(&out_check.stderr)
        );
        assert_eq!(
            text(&out_check.stdout),
            format!("4 files are current with {schema}\n")
        );
    }
}

const ORDERS: &str = r##"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "namespaces": {
    "order": {
      "placed": {
        "description": "A customer placed an order.",
        "type": "object",
        "properties": {
          "id": { "type": "integer", "minimum": 1 },
          "status": { "$ref": "#/$defs/Status" },
          "customer": {
            "type": "object",
            "properties": { "name": { "type": "string" }, "email": { "type": "string" } },
            "required": ["name"],
            "additionalProperties": false
          },
          "lines": { "type": "array", "items": { "$ref": "#/$defs/Line" } },
          "note": { "type": "string" }
        },
        "required": ["id", "status", "customer", "lines"],
        "additionalProperties": false
      },
      "cancelled": { "type": "object", "properties": { "id": { "type": "integer" } }, "required": ["id"], "additionalProperties": false }
    },
    "stock": { "low": { "type": "string" } }
  },
  "$defs": {
    "Status": { "type": "string", "enum": ["new", "paid", "shipped"] },
    "Line": {
      "type": "object",
      "properties": { "sku": { "type": "string" }, "qty": { "type": "integer" } },
      "required": ["sku", "qty"],
      "additionalProperties": false
    }
  }
}"##;

/// A temp dir holding an app with the schema above at `schema/events.json`.
fn app() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("schema")).unwrap();
    std::fs::write(dir.path().join("schema/events.json"), ORDERS).unwrap();
    dir
}

#[test]
fn check_fails_on_a_stale_folder_and_passes_on_a_fresh_one() {
    let app = app();
    let dir = app.path();
    let ts = ["codegen", "--typescript", "web/src/tidings"];
    let check = ["codegen", "--typescript", "web/src/tidings", "--check"];

    let missing = tidings(dir, &check);
    assert_eq!(missing.status.code(), Some(1));
    let err = text(&missing.stderr);
    assert!(err.contains("missing: web/src/tidings/events.ts\n"), "{err}");
    assert!(
        err.contains("error: 4 of 4 generated files are out of date with schema/events.json"),
        "{err}"
    );

    let wrote = tidings(dir, &ts);
    assert!(wrote.status.success(), "{}", text(&wrote.stderr));
    assert_eq!(
        text(&wrote.stdout),
        "wrote web/src/tidings/events.ts\nwrote web/src/tidings/index.ts\n\
         wrote web/src/tidings/react.ts\nwrote web/src/tidings/svelte.ts\n"
    );
    let fresh = tidings(dir, &check);
    assert!(fresh.status.success(), "{}", text(&fresh.stderr));

    // Nothing changed: nothing is written (a watcher on the folder sees no change).
    let again = tidings(dir, &ts);
    assert!(
        text(&again.stdout).lines().all(|l| l.starts_with("unchanged ")),
        "{}",
        text(&again.stdout)
    );

    // The schema gains an event: the folder is stale until regenerated.
    let grown = ORDERS.replace(
        r#""stock": { "low": { "type": "string" } }"#,
        r#""stock": { "low": { "type": "string" }, "out": { "type": "string" } }"#,
    );
    std::fs::write(dir.join("schema/events.json"), grown).unwrap();
    let stale = tidings(dir, &check);
    assert_eq!(stale.status.code(), Some(1));
    let err = text(&stale.stderr);
    for file in ["events.ts", "react.ts", "svelte.ts"] {
        assert!(err.contains(&format!("stale: web/src/tidings/{file}\n")), "{err}");
    }
    // index.ts names no event, so it stays current.
    assert!(!err.contains("index.ts"), "{err}");
    assert!(tidings(dir, &ts).status.success());
    assert!(tidings(dir, &check).status.success());

    // A schema error is one line naming the file and the event.
    std::fs::write(
        dir.join("schema/events.json"),
        ORDERS.replace("#/$defs/Line", "#/$defs/Nope"),
    )
    .unwrap();
    let bad = tidings(dir, &ts);
    assert_eq!(bad.status.code(), Some(1));
    let err = text(&bad.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: schema/events.json: event \"order.placed\": $ref \"#/$defs/Nope\""),
        "{err}"
    );
}

/// `tsc`, where `npm ci` at the repository root put it.
fn tsc() -> PathBuf {
    let tsc = repo().join("node_modules/typescript/bin/tsc");
    assert!(
        tsc.exists(),
        "{} is missing: run `npm ci` at the repository root first",
        tsc.display()
    );
    tsc
}

fn node(args: &[&Path], cwd: &Path) -> Output {
    let mut cmd = Command::new("node");
    for a in args {
        cmd.arg(a);
    }
    cmd.current_dir(cwd).output().expect("run node")
}

/// Installs `@tidings/client` into `app/node_modules` the way npm would: the package built
/// (`dist/`) with its `package.json`, and its peer and runtime dependencies beside it.
fn install_client(app: &Path) {
    let clients = repo().join("clients");
    let pkg = app.join("node_modules/@tidings/client");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::copy(clients.join("package.json"), pkg.join("package.json")).unwrap();
    let out = Command::new("node")
        .arg(tsc())
        .args(["-p", "tsconfig.build.json", "--outDir"])
        .arg(pkg.join("dist"))
        .current_dir(&clients)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "building @tidings/client failed:\n{}",
        text(&out.stdout)
    );
    for dep in ["react", "svelte", "eventsource-parser", "@types"] {
        std::os::unix::fs::symlink(
            repo().join("node_modules").join(dep),
            app.join("node_modules").join(dep),
        )
        .unwrap();
    }
}

const TSCONFIG: &str = r#"{
  "compilerOptions": {
    "target": "ES2022", "lib": ["ES2022", "DOM"], "module": "NodeNext", "moduleResolution": "NodeNext",
    "strict": true, "noUncheckedIndexedAccess": true, "exactOptionalPropertyTypes": true,
    "verbatimModuleSyntax": true, "skipLibCheck": true, "noEmit": true, "types": []
  },
  "files": ["src/FILE"]
}"#;

const GOOD_TS: &str = r#"import { createClient, EVENT_NAMES, type Envelope, type OrderPlaced, type Status } from "./tidings/index.js";
import { useOrderPlaced, useHistory, useRealtime } from "./tidings/react.js";
import { useStockLow } from "./tidings/svelte.js";

const client = createClient({ url: "", transport: "fetch" });
const names: readonly ("order.placed" | "order.cancelled" | "stock.low")[] = EVENT_NAMES;
const stop = client.subscribe({
  channels: ["orders"],
  events: ["order.placed", "stock.low"],
  onReady: () => console.log("live"),
  onData(e) {
    if (e.event === "order.placed") {
      const id: number = e.data.id;
      const status: Status = e.data.status;
      const email: string | undefined = e.data.customer.email;
      const qty: number | undefined = e.data.lines[0]?.qty;
      console.log(id, status, email, qty, e.data.note?.length);
    } else {
      const low: string = e.data;
      console.log(low.toUpperCase());
    }
  },
});
stop();
void client.history("orders").then((entries: Envelope[]) => entries.map((e) => e.id));

export function hooks(): boolean {
  const { ready, status } = useOrderPlaced("orders", (order: OrderPlaced, envelope) => {
    console.log(order.customer.name, envelope.channel, envelope.event === "order.placed");
  });
  const { entries } = useHistory("orders", { limit: 10, events: ["order.cancelled"] });
  const ids: number[] = entries.map((e) => e.data.id);
  useRealtime({ channels: ["orders"], onData: (e) => console.log(e.event) });
  const svelte = useStockLow("stock", (text: string) => console.log(text));
  console.log(ids, status, names, svelte.ready);
  return ready;
}
"#;

/// Each line is an error `tsc` must report in the file: (line, code, part of the message).
const BAD_TS: &str = r#"import { createClient, type OrderPlaced } from "./tidings/index.js";
import { useOrderPlaced, useHistory } from "./tidings/react.js";
const client = createClient({ url: "" });
client.subscribe({ channels: ["orders"], events: ["chat.message"], onData() {} });
client.subscribe({ channels: ["orders"], events: ["order.placed"], onData(e) { console.log(e.data.total); } });
const order: OrderPlaced = { id: "7", status: "new", customer: { name: "ada" }, lines: [] };
const lost: OrderPlaced = { id: 7, status: "lost", customer: { name: "ada" }, lines: [] };
useOrderPlaced("orders", (o) => console.log(o.customer.phone));
useHistory("orders", { events: ["order.shipped"] });
console.log(order, lost);
"#;

const BAD_EXPECTED: &[(usize, &str, &str)] = &[
    (4, "TS2322", "\"chat.message\""),
    (5, "TS2339", "Property 'total' does not exist"),
    (6, "TS2322", "Type 'string' is not assignable to type 'number'"),
    (7, "TS2322", "\"lost\""),
    (8, "TS2339", "Property 'phone' does not exist"),
    (9, "TS2322", "\"order.shipped\""),
];

#[test]
fn a_fresh_app_gets_typescript_typed_by_its_own_schema() {
    let app = app();
    let dir = app.path();
    let out = tidings(
        dir,
        &[
            "codegen",
            "--schema",
            "schema/events.json",
            "--typescript",
            "src/tidings",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    for file in ["events.ts", "index.ts", "react.ts", "svelte.ts"] {
        let code = std::fs::read_to_string(dir.join("src/tidings").join(file)).unwrap();
        assert!(
            code.starts_with("// Generated by tidings-codegen from schema/events.json. Do not edit.\n"),
            "{file}"
        );
        for line in code.lines().filter(|l| l.starts_with("import ")) {
            let from = line.rsplit(" from ").next().unwrap();
            assert!(
                [
                    "\"@tidings/client\";",
                    "\"@tidings/client/react\";",
                    "\"@tidings/client/svelte\";",
                    "\"./events.js\";"
                ]
                .contains(&from),
                "{file} imports {from}"
            );
        }
    }
    install_client(dir);
    std::fs::write(
        dir.join("package.json"),
        r#"{ "name": "orders-app", "private": true, "type": "module" }"#,
    )
    .unwrap();

    std::fs::write(dir.join("src/good.ts"), GOOD_TS).unwrap();
    std::fs::write(dir.join("tsconfig.json"), TSCONFIG.replace("FILE", "good.ts")).unwrap();
    let good = node(&[&tsc(), Path::new("-p"), Path::new(".")], dir);
    assert!(
        good.status.success(),
        "the app's typed code does not compile:\n{}",
        text(&good.stdout)
    );

    std::fs::write(dir.join("src/bad.ts"), BAD_TS).unwrap();
    std::fs::write(dir.join("tsconfig.json"), TSCONFIG.replace("FILE", "bad.ts")).unwrap();
    let bad = node(
        &[
            &tsc(),
            Path::new("-p"),
            Path::new("."),
            Path::new("--pretty"),
            Path::new("false"),
        ],
        dir,
    );
    assert!(!bad.status.success());
    let report = text(&bad.stdout);
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("src/bad.ts(")).collect();
    for (line, code, part) in BAD_EXPECTED {
        let at = format!("src/bad.ts({line},");
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&at) && e.contains(code) && e.contains(part)),
            "expected {code} ({part}) on line {line} of bad.ts; tsc said:\n{report}"
        );
    }
    assert_eq!(
        errors.len(),
        BAD_EXPECTED.len(),
        "tsc reported other errors than expected:\n{report}"
    );
}

/// Each bin of the Rust app that must not compile, with the error rustc must give.
const BAD_RUST: &[(&str, &str, &str)] = &[
    (
        "wrong_field",
        "let _ = events::OrderCancelled { id: 1, reason: None };",
        "error[E0560]: struct `OrderCancelled` has no field named `reason`",
    ),
    (
        "wrong_event",
        "let _ = events::OrderShipped { id: 1 };",
        "error[E0422]: cannot find struct, variant or union type `OrderShipped` in module `events`",
    ),
    (
        "wrong_type",
        "let _ = events::OrderCancelled { id: \"1\".to_string() };",
        "error[E0308]: mismatched types",
    ),
    (
        "not_an_event",
        "fn emit<E: tidings::Emittable>(_: E) {} emit(5u8);",
        "error[E0277]: the trait bound `u8: Emittable` is not satisfied",
    ),
];

#[test]
fn a_fresh_rust_app_gets_types_from_its_own_schema_and_wrong_ones_do_not_compile() {
    let app = app();
    let dir = app.path();
    let out = tidings(dir, &["codegen", "--rust", "src/events.rs"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let root = repo();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"orders-app\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
             [dependencies]\ntidings = {{ path = {:?} }}\nserde = {{ version = \"1\", features = [\"derive\"] }}\n\
             serde_json = \"1\"\n\n[workspace]\n",
            root.display().to_string()
        ),
    )
    .unwrap();
    // The same versions as this workspace, so the build needs no registry.
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    // An app that denies warnings and uses one type of several: the generated code adds none.
    std::fs::write(
        dir.join("src/main.rs"),
        "#![deny(warnings)]\nmod events;\nuse tidings::{Emittable, Payload};\n\n\
         fn main() {\n    let placed = events::OrderPlaced {\n        id: std::num::NonZeroU64::new(7).unwrap(),\n        \
         status: events::Status::Paid,\n        customer: events::OrderPlacedCustomer { name: \"ada\".into(), email: None },\n        \
         lines: vec![events::Line { sku: \"b-1\".into(), qty: 2 }],\n        note: None,\n    };\n    \
         assert_eq!(placed.event_name(), events::OrderPlaced::NAME);\n    \
         println!(\"{}\", serde_json::to_string(&placed).unwrap());\n}\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("src/bin")).unwrap();
    for (name, body, _) in BAD_RUST {
        std::fs::write(
            dir.join(format!("src/bin/{name}.rs")),
            format!("#[path = \"../events.rs\"]\nmod events;\n\nfn main() {{\n    {body}\n}}\n"),
        )
        .unwrap();
    }

    let cargo = || {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(dir)
            .env("CARGO_TARGET_DIR", target_dir())
            .env_remove("RUSTFLAGS")
            .args(["--offline", "--quiet"]);
        cmd
    };
    let run = cargo().args(["run", "--bin", "orders-app"]).output().unwrap();
    assert!(
        run.status.success(),
        "the app with its generated types does not build or run:\n{}",
        text(&run.stderr)
    );
    assert_eq!(
        text(&run.stdout),
        "{\"customer\":{\"name\":\"ada\"},\"id\":7,\"lines\":[{\"qty\":2,\"sku\":\"b-1\"}],\"status\":\"paid\"}\n"
    );

    // What the app compiles through `tidings`: no code generator (tidings' own build script
    // runs one only with its `demo` feature), no command-line crates.
    let tree = cargo()
        .args(["tree", "--prefix", "none", "-e", "normal,build"])
        .output()
        .unwrap();
    assert!(tree.status.success(), "{}", text(&tree.stderr));
    let tree = text(&tree.stdout);
    assert!(tree.contains("tidings v0.1.0"), "{tree}");
    for name in ["typify", "schemars", "prettyplease", "clap ", "reqwest"] {
        assert!(
            !tree.contains(name),
            "the app compiles {name} through tidings:\n{tree}"
        );
    }

    let bad = cargo()
        .args(["build", "--bins", "--keep-going"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = text(&bad.stderr);
    for (name, _, expected) in BAD_RUST {
        let at = err
            .find(expected)
            .unwrap_or_else(|| panic!("{name}: expected `{expected}`; rustc said:\n{err}"));
        let rest = &err[at..];
        let file = format!("src/bin/{name}.rs");
        assert!(
            rest.lines().take(3).any(|l| l.contains(&file)),
            "{name}: `{expected}` is not about {file}:\n{err}"
        );
    }
}
