//! A short run of `tidings-load` against the real `tidings` binary, on the embedded store and on
//! Redis: 50 subscribers over 5 channels, 2000 events from 8 emitters. Every subscriber must get
//! every event of its channel exactly once, and on Redis the node's connections stay few and
//! constant.
//!
//! The load tool is another package of the workspace, so Cargo does not hand its path to these
//! tests: it is looked up next to the `tidings` binary and built with `cargo build -p tidings-load`
//! when missing (`cargo test --workspace` builds it anyway).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Binary, RedisServer, Spawn, SseReader, EMIT_KEY};

const SUBSCRIBERS: u64 = 50;
const CHANNELS: u64 = 5;
const EVENTS: u64 = 2000;
/// The most Redis connections one node may hold (two today).
const BOUND: u64 = 3;
/// The name this test gives its own Redis connections, so `CLIENT LIST` can leave them out.
const PROBE: &str = "tidings-test-probe";

/// The two runs share two cores: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A child process killed on drop (also when the test panics).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `tidings-load` binary of this build profile, built first if it is missing.
fn load_binary() -> PathBuf {
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
    let server = support::tidings_bin();
    let profile_dir = server.parent().expect("the binary is in a profile directory");
    let exe = profile_dir.join(format!("tidings-load{}", std::env::consts::EXE_SUFFIX));
    if exe.is_file() {
        return exe;
    }
    println!(
        "{} is missing: building it with `cargo build -p tidings-load`",
        exe.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("-p")
        .arg("tidings-load")
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
    if let Some(target_dir) = profile_dir.parent() {
        cmd.arg("--target-dir").arg(target_dir);
    }
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.arg("--profile").arg(other);
        }
    }
    let status = cmd.status().expect("run cargo");
    assert!(status.success(), "cargo build -p tidings-load failed: {status}");
    assert!(
        exe.is_file(),
        "cargo built tidings-load, but not at {}",
        exe.display()
    );
    exe
}

/// Runs `tidings-load` against `node`; returns its exit status, its JSON result and its stderr.
async fn run_load(node: &Binary, redis: Option<&RedisServer>) -> (ExitStatus, Value, String) {
    let exe = load_binary();
    let out = tempfile::tempdir().unwrap();
    let (stdout_path, stderr_path) = (out.path().join("stdout"), out.path().join("stderr"));
    let mut cmd = Command::new(&exe);
    cmd.arg("--url")
        .arg(format!("http://{}", node.addr))
        .arg("--key")
        .arg(EMIT_KEY)
        .args(["--subscribers", &SUBSCRIBERS.to_string()])
        .args(["--channels", &CHANNELS.to_string()])
        .args(["--events", &EVENTS.to_string()])
        .args(["--concurrency", "8"])
        .args(["--json", "--strict"])
        .args(["--server-pid", &node.pid().to_string()])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap());
    if let Some(redis) = redis {
        cmd.arg("--redis").arg(redis.url());
    }
    let mut load = Killed(cmd.spawn().expect("start tidings-load"));
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = load.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "tidings-load did not finish within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON from tidings-load ({status}): {stdout}\n{stderr}"));
    let result: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    (status, result, stderr)
}

/// Every client of the test Redis but this test's own probes.
fn node_connections(redis: &RedisServer) -> u64 {
    support::other_clients(redis, PROBE).len() as u64
}

fn check(result: &Value, status: ExitStatus, stderr: &str) {
    println!("tidings-load: {result}");
    assert!(
        status.success(),
        "tidings-load --strict failed ({status}): {stderr}\n{result}"
    );
    let expected = SUBSCRIBERS * (EVENTS / CHANNELS);
    assert_eq!(result["expected_deliveries"], expected, "{result}");
    assert_eq!(result["deliveries"], expected, "{result}");
    assert_eq!(result["lost"], 0, "{result}");
    assert_eq!(result["duplicated"], 0, "{result}");
    assert_eq!(result["failed_emits"], 0, "{result}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_smoke_on_memory() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let node = Spawn::new().start().await;
    let (status, result, stderr) = run_load(&node, None).await;
    check(&result, status, &stderr);
    assert!(result["redis_connections"].is_null(), "{result}");
    println!("memory: {:.1} s", started.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_smoke_on_redis() {
    load_smoke_redis("stock redis", RedisServer::start()).await;
}

/// Without `CONFIG` (as managed Redis services often run), a node cannot turn keyspace
/// notifications on and tails with blocking `XREAD`: the same results are expected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_smoke_on_redis_without_config() {
    load_smoke_redis(
        "redis without CONFIG",
        RedisServer::start_with(&["--rename-command", "CONFIG", ""]),
    )
    .await;
}

async fn load_smoke_redis(label: &str, redis: RedisServer) {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let node = Spawn::new().redis(&redis.url()).start().await;

    // The node's connections once it serves a subscriber (whatever it opens lazily is open).
    let mut warm = SseReader::open(&format!("http://{}/realtime?channel=warm", node.addr), None).await;
    warm.until("tidings.ready").await;
    let before = node_connections(&redis);
    drop(warm);

    // The load tool counts every connection but its own while its 50 subscribers are connected;
    // this test's probe is closed by then.
    let (status, result, stderr) = run_load(&node, Some(&redis)).await;
    check(&result, status, &stderr);
    let during = result["redis_connections"]
        .as_u64()
        .unwrap_or_else(|| panic!("no redis_connections: {result}"));
    // The tool's own connection closes as it exits: give Redis a moment to notice.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut after = node_connections(&redis);
    while after != before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = node_connections(&redis);
    }
    println!(
        "{label}: node's Redis connections before {before}, during the load {during}, after {after} ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    assert!(
        (1..=BOUND).contains(&before),
        "a node holds {before} Redis connections, expected 1 to {BOUND}"
    );
    assert_eq!(during, before, "the node's Redis connections changed under load");
    assert_eq!(
        after, before,
        "the node's Redis connections changed after the load"
    );
}
