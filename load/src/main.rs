//! `tidings-load`: measures a running tidings server from the outside, or the library in process.
//!
//! HTTP mode opens N SSE subscribers over C channels with raw HTTP/1.1 (no client library between
//! the socket and the numbers), emits E numbered events through `POST /emit` from K keep-alive
//! connections, and checks that every subscriber received every event of its channel exactly once.
//! It reports emits/s, deliveries/s, emit-to-receipt latency, lost and duplicated counts, the
//! server's RSS per connection (with `--server-pid`) and the Redis connections in use (with
//! `--redis`).
//!
//! In-process mode (`--inproc`) emits typed events through the library API from many tasks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser, Clone)]
#[command(name = "tidings-load", about = "Load generator for tidings")]
struct Args {
    /// Base URL of the server (http only).
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    url: String,
    /// Emit key of the server.
    #[arg(long, env = "TIDINGS_EMIT_KEY", default_value = "")]
    key: String,
    /// SSE subscribers to open.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Channels: subscriber i watches channel i mod C, event s goes to channel s mod C.
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// Events to emit.
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    /// Concurrent emitters (keep-alive connections).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Cap on emits per second in total (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Connections opened at once while connecting subscribers.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    /// Seconds to wait for the last deliveries after the last emit.
    #[arg(long, default_value_t = 15)]
    drain_secs: u64,
    /// PID of the server, to read its RSS from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Redis URL, to count the server's connections (CLIENT LIST) or for --inproc.
    #[arg(long)]
    redis: Option<String>,
    /// Emit through the library in this process instead of over HTTP (needs --redis or uses
    /// the embedded store).
    #[arg(long)]
    inproc: bool,
    /// Schema file for --inproc.
    #[arg(long, default_value = "schema/events.json")]
    schema: String,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    /// Exit non-zero when any event was lost or duplicated.
    #[arg(long)]
    strict: bool,
    /// A reconnect storm: after the first events are delivered, every subscriber drops its
    /// connection, this many of the events are emitted while they are away, and all reconnect at
    /// once with their cursors (as after a node restart behind a load balancer). Reports the
    /// time until the last one is ready again and the server CPU it took (with --server-pid).
    #[arg(long, default_value_t = 0)]
    storm_events: u64,
    /// How subscribers connect: `sse` (GET /realtime, raw HTTP/1.1) or `ws` (GET /ws, one
    /// subscribe message, through tokio-tungstenite).
    #[arg(long, default_value = "sse", value_parser = ["sse", "ws"])]
    transport: String,
    /// Server-side filters: events are `chat.message`s said by user `u<seq mod subscribers>`,
    /// and subscriber i subscribes with the filter `{"user":"u<i>"}`, so each event matches
    /// exactly one subscriber (the number of subscribers must be a multiple of `--channels`).
    /// `--chat` alone sends the same events without filters, for comparison.
    #[arg(long)]
    filtered: bool,
    /// Emit `chat.message`s (as `--filtered` does) instead of `notification.alert`s.
    #[arg(long)]
    chat: bool,
    /// With `--filtered`: write each filter as `{"not":{"user":{"ne":"u<i>"}}}`, which passes
    /// the same events but which the server cannot index by value, so every event is tested by
    /// every filter.
    #[arg(long)]
    unindexed: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    // 10,000 sockets need more than the usual soft limit of 1024 descriptors.
    let want = (args.subscribers + args.concurrency + 256) as u64;
    let got = rlimit::increase_nofile_limit(want).context("raising the open-file limit")?;
    if got < want {
        bail!("open-file limit is {got}, {want} needed; raise the hard limit (ulimit -Hn)");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        if args.inproc {
            inproc(args).await
        } else {
            http(args).await
        }
    })
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

async fn host_port(url: &str) -> Result<(String, SocketAddr)> {
    let rest = url
        .strip_prefix("http://")
        .context("only http:// URLs are supported")?;
    let host = rest.split('/').next().unwrap_or(rest).to_string();
    let addr = tokio::net::lookup_host(&host)
        .await
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    Ok((host, addr))
}

/// What one subscriber saw.
#[derive(Default)]
struct SubStats {
    received: Vec<u8>,
    duplicates: u64,
    latencies_us: Vec<u32>,
    reconnects: u64,
    lagged: u64,
    /// `tidings.reset` frames: history after the cursor was trimmed, so the events in between
    /// are lost by design (and counted in `lost`), not silently.
    resets: u64,
}

impl SubStats {
    /// Counts the delivery of event `seq`, emitted at `sent` ns: a first one (with its latency,
    /// unless the storm's), or a duplicate.
    fn record(&mut self, shared: &Shared, seq: u64, sent: u64) {
        let now = now_ns();
        match self.received.get_mut(seq as usize) {
            Some(slot) if *slot == 0 => {
                *slot = 1;
                shared.delivered.fetch_add(1, Ordering::AcqRel);
                shared.last_delivery_ns.fetch_max(now, Ordering::AcqRel);
                if seq < shared.storm_from {
                    let us = now.saturating_sub(sent) / 1000;
                    self.latencies_us.push(us.min(u32::MAX as u64) as u32);
                }
            }
            Some(_) => self.duplicates += 1,
            None => {}
        }
    }
}

struct Shared {
    channels: usize,
    /// Subscribers in all (who event `seq` is for, with `filtered`).
    subscribers: usize,
    /// Each subscriber filters on its own user: an event reaches one of them.
    filtered: bool,
    /// Events are `chat.message`s.
    chat: bool,
    /// Filters the server cannot index.
    unindexed: bool,
    events: u64,
    prefix: String,
    ready: AtomicUsize,
    /// Subscribers ready again after the storm, and when the last one was.
    storm_ready: AtomicUsize,
    storm_last_ready_ns: AtomicU64,
    /// Subscribers whose connection is closed for the storm.
    storm_away: AtomicUsize,
    /// 0 before the storm, 1 while subscribers stay away, 2 once they reconnect.
    storm: tokio::sync::watch::Receiver<u8>,
    /// Events from this one on are emitted while subscribers are away: their latency is not
    /// counted.
    storm_from: u64,
    delivered: AtomicU64,
    last_delivery_ns: AtomicU64,
    stop: tokio::sync::watch::Receiver<bool>,
}

async fn http(args: Args) -> Result<()> {
    let (host, addr) = host_port(&args.url).await?;
    let prefix = format!("load{}:", now_ns() % 1_000_000_007);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (storm_tx, storm_rx) = tokio::sync::watch::channel(0u8);
    let storm_events = args.storm_events.min(args.events);
    if args.filtered && args.subscribers % args.channels.max(1) != 0 {
        bail!("--filtered needs --subscribers to be a multiple of --channels");
    }
    let shared = Arc::new(Shared {
        channels: args.channels.max(1),
        subscribers: args.subscribers.max(1),
        filtered: args.filtered,
        chat: args.chat || args.filtered,
        unindexed: args.unindexed,
        events: args.events,
        prefix,
        ready: AtomicUsize::new(0),
        storm_ready: AtomicUsize::new(0),
        storm_last_ready_ns: AtomicU64::new(0),
        storm_away: AtomicUsize::new(0),
        storm: storm_rx,
        storm_from: args.events - storm_events,
        delivered: AtomicU64::new(0),
        last_delivery_ns: AtomicU64::new(0),
        stop: stop_rx,
    });
    let rss_before = args.server_pid.and_then(rss_kb);

    // Connect subscribers, a bounded number at a time.
    let connect_start = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency.max(1)));
    let mut subs = Vec::with_capacity(args.subscribers);
    for i in 0..args.subscribers {
        let shared = shared.clone();
        let host = host.clone();
        let gate = gate.clone();
        let ws = args.transport == "ws";
        subs.push(tokio::spawn(async move {
            if ws {
                ws_subscriber(i, addr, host, shared, gate).await
            } else {
                subscriber(i, addr, host, shared, gate).await
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60 + args.subscribers as u64 / 200);
    while shared.ready.load(Ordering::Acquire) < args.subscribers {
        if Instant::now() > deadline {
            bail!(
                "only {} of {} subscribers connected",
                shared.ready.load(Ordering::Acquire),
                args.subscribers
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_secs = connect_start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_connected = args.server_pid.and_then(rss_kb);
    let redis_connections = match &args.redis {
        Some(url) => Some(redis_clients(url).await?),
        None => None,
    };

    // Emit (all of it, or up to the storm).
    let emit_start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let emit_all = |limit: u64| {
        let mut emitters = Vec::new();
        for _ in 0..args.concurrency.max(1) {
            let (next, failed, shared) = (next.clone(), failed.clone(), shared.clone());
            let (host, key, rate) = (host.clone(), args.key.clone(), args.rate);
            emitters.push(tokio::spawn(async move {
                emitter(addr, host, key, rate, emit_start, limit, next, failed, shared).await
            }));
        }
        emitters
    };
    for e in emit_all(args.events - storm_events) {
        e.await??;
    }
    let emit_secs = emit_start.elapsed().as_secs_f64();
    let storm = if storm_events > 0 {
        Some(storm_phase(&args, &shared, &storm_tx, storm_events, || emit_all(args.events)).await?)
    } else {
        None
    };

    // Wait for deliveries to stop growing (or all to arrive).
    let expected: u64 = (0..args.subscribers)
        .map(|i| shared.wanted(i, args.events).count() as u64)
        .sum();
    let drain_deadline = Instant::now() + Duration::from_secs(args.drain_secs);
    while shared.delivered.load(Ordering::Acquire) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    let mut stats = Vec::with_capacity(subs.len());
    for s in subs {
        stats.push(s.await??);
    }
    let rss_after = args.server_pid.and_then(rss_kb);

    // Account.
    let mut lost = 0u64;
    let mut duplicated = 0u64;
    let mut latencies: Vec<u32> = Vec::new();
    let (mut reconnects, mut lagged, mut resets) = (0u64, 0u64, 0u64);
    for (i, s) in stats.iter().enumerate() {
        for seq in shared.wanted(i, args.events) {
            if s.received.get(seq as usize).copied().unwrap_or(0) == 0 {
                lost += 1;
            }
        }
        duplicated += s.duplicates;
        reconnects += s.reconnects;
        lagged += s.lagged;
        resets += s.resets;
        latencies.extend_from_slice(&s.latencies_us);
    }
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[i] as f64 / 1000.0
    };
    let delivered = shared.delivered.load(Ordering::Acquire);
    let last = shared.last_delivery_ns.load(Ordering::Acquire);
    let start_ns = now_ns() - emit_start.elapsed().as_nanos() as u64;
    let delivery_secs = (last.saturating_sub(start_ns)) as f64 / 1e9;
    let per_conn = match (rss_before, rss_connected) {
        (Some(b), Some(a)) if args.subscribers > 0 => {
            Some((a.saturating_sub(b) * 1024) / args.subscribers as u64)
        }
        _ => None,
    };
    let result = serde_json::json!({
        "subscribers": args.subscribers,
        "channels": shared.channels,
        "filtered": args.filtered,
        "unindexed": args.unindexed,
        "events": args.events,
        "concurrency": args.concurrency,
        "rate_cap": args.rate,
        "connect_secs": round3(connect_secs),
        "emit_secs": round3(emit_secs),
        "emits_per_sec": round3(args.events as f64 / emit_secs),
        "failed_emits": failed.load(Ordering::Acquire),
        "expected_deliveries": expected,
        "deliveries": delivered,
        "deliveries_per_sec": round3(delivered as f64 / delivery_secs.max(1e-9)),
        "latency_ms": { "p50": round3(pct(0.50)), "p99": round3(pct(0.99)), "max": round3(pct(1.0)) },
        "lost": lost,
        "duplicated": duplicated,
        "reconnects": reconnects,
        "lagged": lagged,
        "resets": resets,
        "server_rss_kb": { "before": rss_before, "connected": rss_connected, "after": rss_after },
        "rss_per_connection_bytes": per_conn,
        "redis_connections": redis_connections,
        "storm": storm,
    });
    if args.json {
        println!("{result}");
    } else {
        println!("{}", serde_json::to_string_pretty(&result)?);
    }
    if args.strict && (lost > 0 || duplicated > 0) {
        bail!("{lost} lost, {duplicated} duplicated");
    }
    Ok(())
}

/// The reconnect storm: waits until the events so far are delivered, sends every subscriber
/// away, emits the rest while they are, then lets them all reconnect at once with their cursors.
async fn storm_phase<F>(
    args: &Args,
    shared: &Arc<Shared>,
    storm: &tokio::sync::watch::Sender<u8>,
    missed: u64,
    emit_rest: F,
) -> Result<serde_json::Value>
where
    F: FnOnce() -> Vec<tokio::task::JoinHandle<Result<()>>>,
{
    let before: u64 = (0..args.subscribers)
        .map(|i| shared.wanted(i, args.events - missed).count() as u64)
        .sum();
    let deadline = Instant::now() + Duration::from_secs(args.drain_secs);
    while shared.delivered.load(Ordering::Acquire) < before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    storm.send_replace(1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while shared.storm_away.load(Ordering::Acquire) < args.subscribers {
        if Instant::now() > deadline {
            bail!(
                "only {} subscribers left for the storm",
                shared.storm_away.load(Ordering::Acquire)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for e in emit_rest() {
        e.await??;
    }
    let cpu_before = args.server_pid.and_then(cpu_ticks);
    let started = Instant::now();
    let started_ns = now_ns();
    storm.send_replace(2);
    let deadline = Instant::now() + Duration::from_secs(120);
    while shared.storm_ready.load(Ordering::Acquire) < args.subscribers {
        if Instant::now() > deadline {
            bail!(
                "only {} of {} subscribers were ready again after the storm",
                shared.storm_ready.load(Ordering::Acquire),
                args.subscribers
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    let last = shared
        .storm_last_ready_ns
        .load(Ordering::Acquire)
        .saturating_sub(started_ns) as f64
        / 1e9;
    let cpu = match (cpu_before, args.server_pid.and_then(cpu_ticks)) {
        (Some(a), Some(b)) => Some(round3((b - a) as f64 / clock_ticks())),
        _ => None,
    };
    Ok(serde_json::json!({
        "clients": args.subscribers,
        "missed_events": missed,
        "secs_to_last_ready": round3(last.min(wall)),
        "server_cpu_secs": cpu,
    }))
}

/// User and system CPU of a process, in clock ticks, from /proc.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second (`getconf CLK_TCK`); 100 on Linux.
fn clock_ticks() -> f64 {
    100.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Shared {
    /// The events subscriber `index` should get, of the first `events`: those of its channel,
    /// and with filters only those said by its user.
    fn wanted(&self, index: usize, events: u64) -> impl Iterator<Item = u64> {
        let (start, step) = if self.filtered {
            (index as u64, self.subscribers as u64)
        } else {
            ((index % self.channels) as u64, self.channels as u64)
        };
        (start..events).step_by(step as usize)
    }

    /// Subscriber `index`'s filter, as JSON, when subscribers filter.
    fn filter(&self, index: usize) -> Option<String> {
        self.filtered.then(|| {
            if self.unindexed {
                format!(r#"{{"not":{{"user":{{"ne":"u{index}"}}}}}}"#)
            } else {
                format!(r#"{{"user":"u{index}"}}"#)
            }
        })
    }
}

/// RSS of a process in KiB, from /proc.
fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Connections to Redis other than our own.
async fn redis_clients(url: &str) -> Result<usize> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let list: String = redis::cmd("CLIENT").arg("LIST").query_async(&mut conn).await?;
    Ok(list
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
        .saturating_sub(1))
}

#[allow(clippy::too_many_arguments)]
async fn emitter(
    addr: SocketAddr,
    host: String,
    key: String,
    rate: u64,
    start: Instant,
    limit: u64,
    next: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    shared: Arc<Shared>,
) -> Result<()> {
    let mut conn = TcpStream::connect(addr).await?;
    conn.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(4096);
    loop {
        let seq = next.fetch_add(1, Ordering::AcqRel);
        if seq >= limit {
            // Not taken: the next phase starts from here.
            next.fetch_min(limit, Ordering::AcqRel);
            return Ok(());
        }
        if let Some(offset) = (seq * 1_000_000_000).checked_div(rate) {
            tokio::time::sleep_until((start + Duration::from_nanos(offset)).into()).await;
        }
        let channel = format!("{}{}", shared.prefix, seq % shared.channels as u64);
        let mut attempts = 0;
        loop {
            let body = if shared.chat {
                format!(
                    r#"{{"channel":"{channel}","event":"chat.message","data":{{"user":"u{}","text":"{seq} {}"}}}}"#,
                    seq % shared.subscribers as u64,
                    now_ns()
                )
            } else {
                format!(
                    r#"{{"channel":"{channel}","event":"notification.alert","data":"{seq} {}"}}"#,
                    now_ns()
                )
            };
            let request = format!(
                "POST /emit HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let status = match send(&mut conn, request.as_bytes(), &mut buf).await {
                Ok(status) => status,
                Err(_) => {
                    conn = TcpStream::connect(addr).await?;
                    conn.set_nodelay(true)?;
                    0
                }
            };
            if status == 200 {
                break;
            }
            attempts += 1;
            if attempts >= 5 {
                failed.fetch_add(1, Ordering::AcqRel);
                bail!("emit {seq} failed with status {status} five times");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Sends one request on a keep-alive connection and reads the response; returns its status.
async fn send(conn: &mut TcpStream, request: &[u8], buf: &mut Vec<u8>) -> std::io::Result<u16> {
    conn.write_all(request).await?;
    buf.clear();
    let header_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        read_more(conn, buf).await?;
    };
    let head = std::str::from_utf8(&buf[..header_end]).map_err(std::io::Error::other)?;
    let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < header_end + length {
        read_more(conn, buf).await?;
    }
    Ok(status)
}

async fn read_more(conn: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 8192];
    let n = conn.read(&mut chunk).await?;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One SSE subscriber: raw HTTP/1.1, chunked decoding, SSE framing; reconnects with its cursor
/// when the server ends the stream (e.g. after `tidings.lagged`).
async fn subscriber(
    index: usize,
    addr: SocketAddr,
    host: String,
    shared: Arc<Shared>,
    gate: Arc<tokio::sync::Semaphore>,
) -> Result<SubStats> {
    let ch = index % shared.channels;
    let channel = format!("{}{}", shared.prefix, ch);
    let mut stats = SubStats {
        received: vec![0u8; shared.events as usize],
        ..SubStats::default()
    };
    let mut last_id: Option<String> = None;
    let mut counted_ready = false;
    let mut stop = shared.stop.clone();
    let mut storm = shared.storm.clone();
    let mut storm_done = false;
    let mut storm_counted = false;
    loop {
        let mut permit = if counted_ready {
            None
        } else {
            Some(gate.acquire().await?)
        };
        let mut conn = match TcpStream::connect(addr).await {
            Ok(c) => c,
            Err(e) => {
                if *stop.borrow() {
                    return Ok(stats);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                stats.reconnects += 1;
                if stats.reconnects > 100 {
                    bail!("subscriber {index}: cannot connect: {e}");
                }
                continue;
            }
        };
        let resume = last_id
            .as_ref()
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        let filter = shared
            .filter(index)
            .map(|f| {
                // The filter is made of these characters and letters, digits: only these
                // need escaping.
                let encoded = f
                    .replace('{', "%7B")
                    .replace('}', "%7D")
                    .replace('"', "%22")
                    .replace(':', "%3A");
                format!("&filter={encoded}")
            })
            .unwrap_or_default();
        let request = format!(
            "GET /realtime?channel={channel}{filter} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n{resume}\r\n"
        );
        conn.write_all(request.as_bytes()).await?;
        let mut reader = SseReader::default();
        let mut chunk = vec![0u8; 16 * 1024];
        let ended = loop {
            enum Woke {
                Read(usize),
                Stop,
                Storm,
            }
            let woke = tokio::select! {
                r = conn.read(&mut chunk) => Woke::Read(r.unwrap_or(0)),
                _ = stop.changed() => Woke::Stop,
                _ = storm.wait_for(|s| *s == 1), if !storm_done => Woke::Storm,
            };
            let n = match woke {
                Woke::Read(n) => n,
                Woke::Stop => return Ok(stats),
                Woke::Storm => {
                    // The storm: close the connection, stay away, then come back at once.
                    drop(conn);
                    storm_done = true;
                    shared.storm_away.fetch_add(1, Ordering::AcqRel);
                    let _ = storm.wait_for(|s| *s == 2).await;
                    break false;
                }
            };
            if n == 0 {
                break true;
            }
            for frame in reader.feed(&chunk[..n])? {
                if let Some(id) = frame.id {
                    last_id = Some(id);
                }
                match frame.event.as_deref() {
                    Some("tidings.ready") if !counted_ready => {
                        counted_ready = true;
                        drop(permit.take());
                        shared.ready.fetch_add(1, Ordering::AcqRel);
                    }
                    Some("tidings.ready") if storm_done && !storm_counted => {
                        storm_counted = true;
                        shared.storm_last_ready_ns.fetch_max(now_ns(), Ordering::AcqRel);
                        shared.storm_ready.fetch_add(1, Ordering::AcqRel);
                    }
                    Some("tidings.lagged") => stats.lagged += 1,
                    Some("tidings.reset") => stats.resets += 1,
                    Some("notification.alert" | "chat.message") => {
                        if let Some((seq, sent)) = frame.data.as_deref().and_then(payload) {
                            stats.record(&shared, seq, sent);
                        }
                    }
                    _ => {}
                }
            }
        };
        if ended {
            if *stop.borrow() {
                return Ok(stats);
            }
            stats.reconnects += 1;
        }
    }
}

/// [`subscriber`] over `GET /ws`: one `subscribe` message with the last cursor seen.
async fn ws_subscriber(
    index: usize,
    addr: SocketAddr,
    host: String,
    shared: Arc<Shared>,
    gate: Arc<tokio::sync::Semaphore>,
) -> Result<SubStats> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let ch = index % shared.channels;
    let channel = format!("{}{}", shared.prefix, ch);
    let mut stats = SubStats {
        received: vec![0u8; shared.events as usize],
        ..SubStats::default()
    };
    let mut cursor: Option<String> = None;
    let mut counted_ready = false;
    let mut stop = shared.stop.clone();
    let mut storm = shared.storm.clone();
    let mut storm_done = false;
    let mut storm_counted = false;
    loop {
        let mut permit = if counted_ready {
            None
        } else {
            Some(gate.acquire().await?)
        };
        let tcp = match TcpStream::connect(addr).await {
            Ok(c) => c,
            Err(e) => {
                if *stop.borrow() {
                    return Ok(stats);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                stats.reconnects += 1;
                if stats.reconnects > 100 {
                    bail!("subscriber {index}: cannot connect: {e}");
                }
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{host}/ws"), tcp)
            .await
            .with_context(|| format!("subscriber {index}: WebSocket handshake"))?;
        let mut subscribe = serde_json::json!({"type": "subscribe", "channels": [channel]});
        if let Some(f) = shared.filter(index) {
            subscribe["filter"] = serde_json::from_str(&f)?;
        }
        if let Some(c) = &cursor {
            subscribe["cursor"] = serde_json::Value::String(c.clone());
        }
        ws.send(Message::text(subscribe.to_string())).await?;
        let ended = loop {
            enum Woke {
                Msg(Option<Message>),
                Stop,
                Storm,
            }
            let woke = tokio::select! {
                m = ws.next() => Woke::Msg(m.and_then(|m| m.ok())),
                _ = stop.changed() => Woke::Stop,
                _ = storm.wait_for(|s| *s == 1), if !storm_done => Woke::Storm,
            };
            let text = match woke {
                Woke::Msg(Some(Message::Text(text))) => text,
                Woke::Msg(Some(_)) => continue,
                Woke::Msg(None) => break true,
                Woke::Stop => return Ok(stats),
                Woke::Storm => {
                    drop(ws);
                    storm_done = true;
                    shared.storm_away.fetch_add(1, Ordering::AcqRel);
                    let _ = storm.wait_for(|s| *s == 2).await;
                    break false;
                }
            };
            let text = text.as_str();
            // Events are read without a JSON parser, as the SSE subscriber reads them.
            if text.starts_with(r#"{"type":"event""#) {
                if let Some(c) = field(text, "cursor") {
                    cursor = Some(c.to_string());
                }
                if let Some((seq, sent)) = payload(text) {
                    stats.record(&shared, seq, sent);
                }
                continue;
            }
            let frame: serde_json::Value = serde_json::from_str(text)?;
            if let Some(c) = frame["cursor"].as_str() {
                cursor = Some(c.to_string());
            }
            match frame["type"].as_str() {
                Some("ready") if !counted_ready => {
                    counted_ready = true;
                    drop(permit.take());
                    shared.ready.fetch_add(1, Ordering::AcqRel);
                }
                Some("ready") if storm_done && !storm_counted => {
                    storm_counted = true;
                    shared.storm_last_ready_ns.fetch_max(now_ns(), Ordering::AcqRel);
                    shared.storm_ready.fetch_add(1, Ordering::AcqRel);
                }
                Some("lagged") => stats.lagged += 1,
                Some("reset") => stats.resets += 1,
                Some("error") => bail!("subscriber {index}: {text}"),
                _ => {}
            }
        };
        if ended {
            if *stop.borrow() {
                return Ok(stats);
            }
            stats.reconnects += 1;
        }
    }
}

/// The string value of `"name":"…"` in `text` (values without escapes, as cursors are).
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("\"{name}\":\"");
    let start = text.find(&key)? + key.len();
    let end = text[start..].find('"')?;
    Some(&text[start..start + end])
}

/// Reads `"<seq> <sent ns>"` out of an envelope's `data` string (a `notification.alert`) or its
/// `data.text` (a `chat.message`) without a JSON parser.
fn payload(envelope: &str) -> Option<(u64, u64)> {
    let start = match envelope.find(r#""data":""#) {
        Some(at) => at + 8,
        None => envelope.find(r#""text":""#)? + 8,
    };
    let rest = &envelope[start..];
    let end = rest.find('"')?;
    let (seq, sent) = rest[..end].split_once(' ')?;
    Some((seq.parse().ok()?, sent.parse().ok()?))
}

#[derive(Default)]
struct Frame {
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
}

/// HTTP response head, then chunked transfer decoding, then SSE frames.
#[derive(Default)]
struct SseReader {
    raw: Vec<u8>,
    head_done: bool,
    chunked: bool,
    body: Vec<u8>,
}

impl SseReader {
    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Frame>> {
        self.raw.extend_from_slice(bytes);
        if !self.head_done {
            let Some(end) = find(&self.raw, b"\r\n\r\n") else {
                return Ok(Vec::new());
            };
            let head = String::from_utf8_lossy(&self.raw[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                bail!("subscription refused: {}", head.lines().next().unwrap_or(""));
            }
            self.chunked = head.contains("transfer-encoding: chunked");
            self.raw.drain(..end + 4);
            self.head_done = true;
        }
        if self.chunked {
            while let Some(line_end) = find(&self.raw, b"\r\n") {
                let size_text = std::str::from_utf8(&self.raw[..line_end])?;
                let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                    .with_context(|| format!("bad chunk size {size_text:?}"))?;
                if self.raw.len() < line_end + 2 + size + 2 {
                    break;
                }
                self.body
                    .extend_from_slice(&self.raw[line_end + 2..line_end + 2 + size]);
                self.raw.drain(..line_end + 2 + size + 2);
            }
        } else {
            self.body.append(&mut self.raw);
        }
        let mut frames = Vec::new();
        while let Some(end) = find(&self.body, b"\n\n") {
            let block: Vec<u8> = self.body.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&block);
            let mut frame = Frame::default();
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    frame.id = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("event: ") {
                    frame.event = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    frame.data = Some(v.to_string());
                }
            }
            if frame.event.is_some() {
                frames.push(frame);
            }
        }
        Ok(frames)
    }
}

/// Typed emits through the library API from many tasks.
async fn inproc(args: Args) -> Result<()> {
    use tidings::events::NotificationAlert;
    let mut config = tidings::Config::default().schema(&args.schema);
    if let Some(url) = &args.redis {
        config = config.redis_url(url);
    }
    let rt = tidings::Tidings::from_config(config).await?;
    let tasks = args.concurrency.max(1) as u64;
    let per_task = args.events / tasks;
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let rt = rt.clone();
        let channels = args.channels.max(1) as u64;
        handles.push(tokio::spawn(async move {
            for i in 0..per_task {
                let seq = t * per_task + i;
                let alert: NotificationAlert = format!("{seq}").parse().map_err(anyhow::Error::msg)?;
                rt.channel(&format!("inproc:{}", seq % channels))
                    .emit(alert)
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for h in handles {
        h.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    let total = per_task * tasks;
    let result = serde_json::json!({
        "mode": "inproc",
        "store": rt.store().kind(),
        "tasks": tasks,
        "events": total,
        "secs": round3(secs),
        "emits_per_sec": round3(total as f64 / secs),
    });
    println!("{result}");
    Ok(())
}
