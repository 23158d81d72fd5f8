//! A minute of chaos in the test command: `tidings-chaos` with its own Redis (AOF always) and two
//! nodes, Redis and nodes killed and restarted, clients dropping at random, emitters going. Every
//! client must get exactly the acknowledged events of its channels, in order.

use std::path::PathBuf;
use std::process::Command;

fn tidings_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("TIDINGS_BIN") {
        return PathBuf::from(bin);
    }
    // Tests run as <target>/<profile>/deps/<test>-<hash>; the binary is <target>/<profile>/tidings.
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(|d| d.parent()).unwrap().join("tidings");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p tidings-cli` first",
        bin.display()
    );
    bin
}

#[test]
fn a_minute_of_chaos_loses_and_duplicates_nothing() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(env!("CARGO_BIN_EXE_tidings-chaos"))
        .args([
            "--secs",
            "60",
            "--json",
            "--redis-every",
            "12",
            "--node-every",
            "17",
        ])
        .arg("--tidings-bin")
        .arg(tidings_bin())
        .arg("--schema")
        .arg(root.join("tests/events/events.json"))
        .output()
        .expect("run tidings-chaos");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let result: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no result: {stdout}\n{stderr}"));
    println!("{result}");
    assert!(out.status.success(), "{result}\n{stderr}");
    for zero in ["lost", "duplicated", "out_of_order", "resets"] {
        assert_eq!(result[zero], 0, "{zero}: {result}");
    }
    assert!(result["redis_kills"].as_u64().unwrap() >= 4, "{result}");
    assert!(result["node_kills"].as_u64().unwrap() >= 3, "{result}");
    assert!(result["client_reconnects"].as_u64().unwrap() >= 100, "{result}");
    assert!(result["events_checked"].as_u64().unwrap() >= 10_000, "{result}");
}
