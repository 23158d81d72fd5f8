//! `tidings-chaos`: a soak under faults, checked event by event.
//!
//! It starts its own `redis-server` (AOF, `appendfsync always`) and two `tidings` nodes on it,
//! connects N SSE clients (each on two channels, through `eventsource-stream`, a parser we did
//! not write) and keeps emitters going, while:
//!
//! - every client drops its connection at random and resumes from its cursor, on either node;
//! - Redis is killed (`SIGKILL`) and restarted from its AOF every `--redis-every` seconds;
//! - a node is killed (`SIGKILL`) and restarted every `--node-every` seconds.
//!
//! Emits carry an `Idempotency-Key` and are retried (on the other node too) until one is
//! answered 200, so an attempt that timed out but was stored is never stored twice. At the end
//! every client must have received, for each of its channels, exactly the acknowledged events,
//! in stream order, no duplicates, and no `tidings.reset` (with AOF always, no history is lost).
//! Exits 1 otherwise, with the counts.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use rand::Rng;
use tidings::StreamId;

#[derive(Parser, Clone)]
#[command(
    name = "tidings-chaos",
    about = "A soak of tidings under faults, checked event by event"
)]
struct Args {
    /// How long emitters and faults run, in seconds.
    #[arg(long, default_value_t = 60)]
    secs: u64,
    /// SSE clients (each watches two channels).
    #[arg(long, default_value_t = 40)]
    clients: usize,
    /// Channels.
    #[arg(long, default_value_t = 8)]
    channels: usize,
    /// Emits per second, in total.
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Seconds between Redis kills (0: never).
    #[arg(long, default_value_t = 15)]
    redis_every: u64,
    /// Seconds between node kills (0: never).
    #[arg(long, default_value_t = 20)]
    node_every: u64,
    /// A client drops its connection after a random time up to this many seconds.
    #[arg(long, default_value_t = 5)]
    drop_within: u64,
    /// The tidings binary (default: next to this one).
    #[arg(long, env = "TIDINGS_BIN")]
    tidings_bin: Option<PathBuf>,
    /// The redis-server binary.
    #[arg(long, env = "TIDINGS_REDIS_SERVER", default_value = "redis-server")]
    redis_server: String,
    /// The schema the nodes load (it must have `notification.alert` with a string payload).
    #[arg(long, default_value = "tests/events/events.json")]
    schema: PathBuf,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

const KEY: &str = "chaos-emit-key";

/// A random number in `range` (the thread's generator is not held across an await).
fn rnd<T: rand::distr::uniform::SampleUniform + PartialOrd>(range: std::ops::Range<T>) -> T {
    rand::rng().random_range(range)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A child process, SIGKILLed on drop.
struct Proc {
    child: Option<Child>,
}

impl Proc {
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

struct World {
    dir: tempfile::TempDir,
    args: Args,
    tidings: PathBuf,
    redis_port: u16,
    node_ports: [u16; 2],
    redis: Mutex<Proc>,
    nodes: [Mutex<Proc>; 2],
    /// Nodes believed up, for emitters and clients to pick from.
    up: [AtomicBool; 2],
}

impl World {
    fn start_redis(&self) -> Result<()> {
        let child = Command::new(&self.args.redis_server)
            .args(["--port", &self.redis_port.to_string(), "--bind", "127.0.0.1"])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--save", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", self.args.redis_server))?;
        *self.redis.lock().unwrap() = Proc { child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.redis_port)).is_err() {
            if Instant::now() > deadline {
                bail!("redis-server did not start on port {}", self.redis_port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn start_node(&self, i: usize) -> Result<()> {
        let log = std::fs::File::create(self.dir.path().join(format!("node{i}.log")))?;
        let child = Command::new(&self.tidings)
            .args(["--bind", &format!("127.0.0.1:{}", self.node_ports[i])])
            .args(["--redis", &format!("redis://127.0.0.1:{}", self.redis_port)])
            .arg("--schema")
            .arg(&self.args.schema)
            .args([
                "--redis-wait",
                "60",
                "--heartbeat",
                "2",
                "--history-max-len",
                "1000000",
            ])
            .args(["--emit-key-rate", "0", "--max-connections-per-identity", "100000"])
            .env("TIDINGS_EMIT_KEY", KEY)
            .env("TIDINGS_LOG", "tidings=info,warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.tidings.display()))?;
        *self.nodes[i].lock().unwrap() = Proc { child: Some(child) };
        Ok(())
    }

    fn url(&self, i: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.node_ports[i])
    }

    /// A node believed up (either when both are).
    fn pick(&self) -> usize {
        let i = rnd(0..2);
        if self.up[i].load(Ordering::Acquire) {
            i
        } else {
            1 - i
        }
    }

    async fn wait_healthy(&self, i: usize, http: &reqwest::Client) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(self.url(i, "/health")).send().await {
                if r.status() == 200 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.dir.path().join(format!("node{i}.log"))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(10).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "node {i} did not become healthy in 60 s; its log ends:\n{}",
                    tail.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What one client saw of one channel.
#[derive(Default)]
struct Seen {
    ids: Vec<StreamId>,
    duplicates: u64,
}

#[derive(Default)]
struct ClientLog {
    channels: BTreeMap<String, Seen>,
    resets: u64,
    reconnects: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<bool> {
    let tidings = match &args.tidings_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("tidings"),
    };
    let world = Arc::new(World {
        dir: tempfile::tempdir()?,
        tidings,
        redis_port: free_port()?,
        node_ports: [free_port()?, free_port()?],
        redis: Mutex::new(Proc { child: None }),
        nodes: [Mutex::new(Proc { child: None }), Mutex::new(Proc { child: None })],
        up: [AtomicBool::new(true), AtomicBool::new(true)],
        args: args.clone(),
    });
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()?;
    world.start_redis()?;
    world.start_node(0)?;
    world.start_node(1)?;
    world.wait_healthy(0, &http).await?;
    world.wait_healthy(1, &http).await?;
    eprintln!(
        "chaos: redis on {}, nodes on {:?}, dir {}",
        world.redis_port,
        world.node_ports,
        world.dir.path().display()
    );

    let channels: Vec<String> = (0..args.channels.max(2)).map(|i| format!("chaos:{i}")).collect();
    let stop_clients = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for i in 0..args.clients {
        let mine = vec![
            channels[i % channels.len()].clone(),
            channels[(i + 1) % channels.len()].clone(),
        ];
        clients.push(tokio::spawn(client(
            world.clone(),
            mine,
            ready.clone(),
            stop_clients.clone(),
        )));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready.load(Ordering::Acquire) < args.clients {
        if Instant::now() > deadline {
            bail!(
                "only {} of {} clients connected",
                ready.load(Ordering::Acquire),
                args.clients
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Emitters and faults, for --secs.
    let acked: Arc<Mutex<HashMap<String, Vec<StreamId>>>> = Arc::default();
    let stop_emit = Arc::new(AtomicBool::new(false));
    let seq = Arc::new(AtomicU64::new(0));
    let failed_attempts = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let emitters: Vec<_> = (0..4)
        .map(|_| {
            let (world, http, acked, stop, seq, channels, failed) = (
                world.clone(),
                http.clone(),
                acked.clone(),
                stop_emit.clone(),
                seq.clone(),
                channels.clone(),
                failed_attempts.clone(),
            );
            let rate = args.rate.max(1);
            tokio::spawn(async move {
                while !stop.load(Ordering::Acquire) {
                    let n = seq.fetch_add(1, Ordering::AcqRel);
                    tokio::time::sleep_until(
                        (started + Duration::from_nanos(n * 1_000_000_000 / rate)).into(),
                    )
                    .await;
                    let channel = &channels[rnd(0..channels.len())];
                    let id = emit_until_acked(&world, &http, channel, n, &failed).await?;
                    acked.lock().unwrap().entry(channel.clone()).or_default().push(id);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    let (mut redis_kills, mut node_kills) = (0u64, 0u64);
    let mut next_redis = if args.redis_every > 0 {
        started + Duration::from_secs(args.redis_every)
    } else {
        started + Duration::from_secs(u64::MAX / 4)
    };
    let mut next_node = if args.node_every > 0 {
        started + Duration::from_secs(args.node_every)
    } else {
        started + Duration::from_secs(u64::MAX / 4)
    };
    let end = started + Duration::from_secs(args.secs);
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_redis {
            redis_kills += 1;
            eprintln!(
                "chaos: {:.0} s: SIGKILL redis ({redis_kills})",
                started.elapsed().as_secs_f64()
            );
            world.redis.lock().unwrap().kill();
            tokio::time::sleep(Duration::from_millis(rnd(300..2000))).await;
            world.start_redis()?;
            next_redis += Duration::from_secs(args.redis_every);
        }
        if now >= next_node {
            let i = (node_kills % 2) as usize;
            node_kills += 1;
            eprintln!(
                "chaos: {:.0} s: SIGKILL node {i} ({node_kills})",
                started.elapsed().as_secs_f64()
            );
            world.up[i].store(false, Ordering::Release);
            world.nodes[i].lock().unwrap().kill();
            tokio::time::sleep(Duration::from_millis(rnd(300..1500))).await;
            world.start_node(i)?;
            world.wait_healthy(i, &http).await?;
            world.up[i].store(true, Ordering::Release);
            next_node += Duration::from_secs(args.node_every);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_emit.store(true, Ordering::Release);
    for e in emitters {
        e.await??;
    }

    // Let every client catch up with what was acknowledged, then look.
    let acked = acked.lock().unwrap().clone();
    let last: HashMap<String, StreamId> = acked
        .iter()
        .map(|(c, ids)| (c.clone(), ids.iter().copied().max().unwrap_or_default()))
        .collect();
    let logs = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let caught_up = CLIENT_LOGS.lock().unwrap().iter().all(|log| {
                log.lock().unwrap().channels.iter().all(|(c, seen)| {
                    last.get(c)
                        .is_none_or(|want| seen.ids.last().is_some_and(|got| got >= want))
                })
            });
            if caught_up || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop_clients.store(true, Ordering::Release);
        let mut logs = Vec::new();
        for c in clients {
            logs.push(c.await??);
        }
        logs
    };

    let (mut lost, mut duplicated, mut out_of_order, mut resets, mut reconnects, mut checked) =
        (0u64, 0, 0, 0, 0, 0);
    for log in &logs {
        resets += log.resets;
        reconnects += log.reconnects;
        for (channel, seen) in &log.channels {
            duplicated += seen.duplicates;
            let mut want = acked.get(channel).cloned().unwrap_or_default();
            want.sort_unstable();
            checked += want.len() as u64;
            if seen.ids.windows(2).any(|w| w[0] >= w[1]) {
                out_of_order += 1;
            }
            let got: std::collections::BTreeSet<StreamId> = seen.ids.iter().copied().collect();
            lost += want.iter().filter(|id| !got.contains(id)).count() as u64;
            let extra = got.iter().filter(|id| want.binary_search(id).is_err()).count() as u64;
            duplicated += extra; // delivered but never acknowledged: stored twice, or invented
        }
    }
    let events: usize = acked.values().map(Vec::len).sum();
    let result = serde_json::json!({
        "secs": args.secs,
        "clients": args.clients,
        "channels": channels.len(),
        "events_acknowledged": events,
        "events_checked": checked,
        "client_reconnects": reconnects,
        "redis_kills": redis_kills,
        "node_kills": node_kills,
        "emit_attempts_failed": failed_attempts.load(Ordering::Acquire),
        "lost": lost,
        "duplicated": duplicated,
        "out_of_order": out_of_order,
        "resets": resets,
    });
    if args.json {
        println!("{result}");
    } else {
        println!("{}", serde_json::to_string_pretty(&result)?);
    }
    let clean = lost == 0 && duplicated == 0 && out_of_order == 0 && resets == 0 && events > 0;
    if !clean {
        for i in 0..2 {
            let log =
                std::fs::read_to_string(world.dir.path().join(format!("node{i}.log"))).unwrap_or_default();
            eprintln!("--- node {i} log (last lines) ---");
            for line in log.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
    Ok(clean)
}

/// Every client's log, so the caller can tell when all have caught up.
static CLIENT_LOGS: Mutex<Vec<Arc<Mutex<ClientLog>>>> = Mutex::new(Vec::new());

async fn emit_until_acked(
    world: &World,
    http: &reqwest::Client,
    channel: &str,
    n: u64,
    failed: &AtomicU64,
) -> Result<StreamId> {
    let body =
        serde_json::json!({ "channel": channel, "event": "notification.alert", "data": format!("{n}") });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let node = world.pick();
        let sent = http
            .post(world.url(node, "/emit"))
            .bearer_auth(KEY)
            .header("Idempotency-Key", format!("chaos-{n}"))
            .json(&body)
            .send()
            .await;
        if let Ok(r) = sent {
            if r.status() == 200 {
                let v: serde_json::Value = r.json().await?;
                return v["id"]
                    .as_str()
                    .context("an id")?
                    .parse()
                    .map_err(anyhow::Error::msg);
            }
        }
        failed.fetch_add(1, Ordering::AcqRel);
        if Instant::now() > deadline {
            bail!("emit {n} was not acknowledged in 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One SSE client: connects to a random node, reads until its random drop time (or the node
/// dies), then resumes from its last `id:` on a random node. Returns what it saw.
async fn client(
    world: Arc<World>,
    channels: Vec<String>,
    ready: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Result<ClientLog> {
    let log = Arc::new(Mutex::new(ClientLog::default()));
    for c in &channels {
        log.lock().unwrap().channels.insert(c.clone(), Seen::default());
    }
    CLIENT_LOGS.lock().unwrap().push(log.clone());
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .build()?;
    let query: Vec<String> = channels.iter().map(|c| format!("channel={c}")).collect();
    let mut cursor: Option<String> = None;
    let mut counted = false;
    while !stop.load(Ordering::Acquire) {
        let node = world.pick();
        let mut req = http.get(world.url(node, &format!("/realtime?{}", query.join("&"))));
        if let Some(c) = &cursor {
            req = req.header("Last-Event-ID", c);
        }
        let drop_at = Instant::now() + Duration::from_millis(rnd(200..world.args.drop_within.max(1) * 1000));
        if let Ok(resp) = req.send().await {
            if resp.status() == 200 {
                let mut events = resp.bytes_stream().eventsource();
                loop {
                    let next = tokio::time::timeout_at(drop_at.into(), events.next()).await;
                    let Ok(Some(Ok(ev))) = next else { break };
                    if !ev.id.is_empty() {
                        cursor = Some(ev.id.clone());
                    }
                    match ev.event.as_str() {
                        "tidings.ready" if !counted => {
                            counted = true;
                            ready.fetch_add(1, Ordering::AcqRel);
                        }
                        "tidings.reset" => log.lock().unwrap().resets += 1,
                        "notification.alert" => {
                            let v: serde_json::Value = serde_json::from_str(&ev.data)?;
                            let (Some(ch), Some(id)) = (v["channel"].as_str(), v["id"].as_str()) else {
                                bail!("an envelope without channel or id: {}", ev.data);
                            };
                            let id: StreamId = id.parse().map_err(anyhow::Error::msg)?;
                            let mut log = log.lock().unwrap();
                            let seen = log.channels.entry(ch.to_string()).or_default();
                            if seen.ids.last().is_some_and(|last| *last >= id) {
                                seen.duplicates += 1;
                            } else {
                                seen.ids.push(id);
                            }
                        }
                        _ => {}
                    }
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                }
            }
        }
        log.lock().unwrap().reconnects += 1;
        tokio::time::sleep(Duration::from_millis(rnd(20..200))).await;
    }
    let out = std::mem::take(&mut *log.lock().unwrap());
    Ok(out)
}
