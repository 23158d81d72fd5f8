//! The `tidings` command: serve the schema's events, generate an app's code from its schema, or
//! emit and tail from a terminal.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use tidings::{Config, Limits, Retention, Tidings};

#[derive(Parser)]
#[command(
    name = "tidings",
    version,
    about = "Typed realtime events: validated emits, capped streams, SSE with exact resume."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default when no subcommand is given).
    Serve(Box<ServeArgs>),
    /// Emit one event through a running server's POST /emit.
    Emit {
        /// Channel name, e.g. room:1.
        channel: String,
        /// Event name, e.g. chat.message.
        event: String,
        /// The payload as JSON, e.g. '{"text":"hi","user":"ada"}'.
        data: String,
        /// Store the event at most once for this key (sent as the Idempotency-Key header): run
        /// the same command again and it answers the first id, storing nothing.
        #[arg(long)]
        idempotency_key: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Generate an app's TypeScript folder and/or Rust types from its schema (files are written
    /// only when they change; --check writes nothing and fails when they are stale).
    Codegen(CodegenArgs),
    /// Print events of one or more channels as they arrive (GET /realtime).
    Tail {
        /// Channel names.
        #[arg(required = true)]
        channels: Vec<String>,
        /// Resume from this cursor (the id: of an earlier event) instead of starting live.
        #[arg(long)]
        cursor: Option<String>,
        /// A JWT to subscribe with, when the server requires one (sent as Authorization: Bearer).
        #[arg(long, env = "TIDINGS_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("outputs").required(true).multiple(true).args(["typescript", "rust"]))]
struct CodegenArgs {
    /// The event schema. Generated files name it as given here.
    #[arg(long, default_value = "schema/events.json")]
    schema: PathBuf,
    /// The TypeScript folder to write: events.ts (types, EventMap, EVENT_NAMES), index.ts (a
    /// createClient bound to the schema), react.ts and svelte.ts (bound hooks, one per event).
    #[arg(long, value_name = "DIR")]
    typescript: Option<PathBuf>,
    /// A Rust file to write the payload types and the Event enum to (for `mod events;` or
    /// `include!`), instead of generating them into OUT_DIR from build.rs.
    #[arg(long, value_name = "FILE")]
    rust: Option<PathBuf>,
    /// Path of the tidings crate in the generated Rust (when the dependency is renamed).
    #[arg(long, default_value = "::tidings", value_name = "PATH")]
    tidings_crate: String,
    /// Write nothing; exit with status 1 when a file is missing or differs from what the schema
    /// generates (for CI).
    #[arg(long)]
    check: bool,
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "TIDINGS_BIND", default_value = "127.0.0.1:3000")]
    bind: SocketAddr,
    /// The event schema.
    #[arg(long, env = "TIDINGS_SCHEMA", default_value = "schema/events.json")]
    schema: PathBuf,
    /// Redis URL; without it events live in the embedded in-memory store. For a Redis Cluster:
    /// seed URLs separated by commas, or redis+cluster://host:port.
    #[arg(long, env = "REDIS_URL")]
    redis: Option<String>,
    /// How a node finds new entries on Redis: keyspace notifications (enabled with CONFIG SET
    /// when allowed), one blocking XREAD over every watched stream, or auto (keyspace if possible;
    /// a Redis Cluster always uses keyspace).
    #[arg(long, env = "TIDINGS_REDIS_TAIL", default_value = "auto")]
    redis_tail: tidings::TailMode,
    /// Seconds to keep trying, with backoff, to reach a Redis that does not answer at start
    /// (each attempt is logged); 0 tries once.
    #[arg(long, env = "TIDINGS_REDIS_WAIT", default_value_t = 30)]
    redis_wait: u64,
    /// Emits that may wait for Redis at once (a stalled Redis); beyond, 503 store_busy at once.
    #[arg(long, env = "TIDINGS_REDIS_MAX_PENDING", default_value_t = 10_000)]
    redis_max_pending: usize,
    /// Bytes of payload those emits may hold.
    #[arg(long, env = "TIDINGS_REDIS_MAX_PENDING_BYTES", default_value_t = 64 << 20)]
    redis_max_pending_bytes: usize,
    /// Seconds an emit's Idempotency-Key is remembered per channel: a retry with the same key
    /// within it stores nothing and answers the first id.
    #[arg(long, env = "TIDINGS_IDEMPOTENCY_WINDOW", default_value_t = 300)]
    idempotency_window: u64,
    /// Entries kept per channel (at least; Redis trims approximately).
    #[arg(long, env = "TIDINGS_HISTORY_MAX_LEN", default_value_t = 1000)]
    history_max_len: usize,
    /// Drop a channel's history after this many seconds without an emit.
    #[arg(long, env = "TIDINGS_HISTORY_TTL")]
    history_ttl: Option<u64>,
    /// Bearer key for POST /emit; generated and printed when not given.
    #[arg(long, env = "TIDINGS_EMIT_KEY", hide_env_values = true)]
    emit_key: Option<String>,
    /// Seconds between heartbeats (a `tidings.ping` event on a stream with nothing else to
    /// send; clients reconnect when they hear nothing for 2.5 times this).
    #[arg(long, env = "TIDINGS_HEARTBEAT", default_value_t = 15)]
    heartbeat: u64,
    /// Seconds a write to a stream may make no progress (a client that stopped reading, a
    /// vanished peer) before the stream is closed and its slot freed; also the sockets'
    /// TCP_USER_TIMEOUT.
    #[arg(long, env = "TIDINGS_WRITE_TIMEOUT", default_value_t = 30)]
    write_timeout: u64,
    /// Channels one connection may watch.
    #[arg(long, env = "TIDINGS_MAX_CHANNELS", default_value_t = 100)]
    max_channels: usize,
    /// Largest payload accepted, in bytes.
    #[arg(long, env = "TIDINGS_MAX_PAYLOAD_BYTES", default_value_t = 65536)]
    max_payload_bytes: usize,
    /// Longest channel name accepted, in characters (at most 256).
    #[arg(long, env = "TIDINGS_MAX_CHANNEL_LEN", default_value_t = 128)]
    max_channel_len: usize,
    /// SSE streams this node holds at once; beyond, 503 node_full.
    #[arg(long, env = "TIDINGS_MAX_CONNECTIONS", default_value_t = 50_000)]
    max_connections: usize,
    /// SSE streams one identity (JWT sub) may hold on this node; beyond, 429.
    #[arg(long, env = "TIDINGS_MAX_CONNECTIONS_PER_IDENTITY", default_value_t = 64)]
    max_connections_per_identity: usize,
    /// POST /emit per second per JWT publisher (keyed by sub); beyond, 429. 0: no limit.
    #[arg(long, env = "TIDINGS_EMIT_RATE", default_value_t = 100)]
    emit_rate: u32,
    /// POST /emit per second with the emit key, all together; beyond, 429. 0: no limit.
    #[arg(long, env = "TIDINGS_EMIT_KEY_RATE", default_value_t = 0)]
    emit_key_rate: u32,
    /// Messages per second one WebSocket connection may send; beyond, error frames, and at
    /// twice the rate the connection is closed (4008).
    #[arg(long, env = "TIDINGS_WS_MESSAGE_RATE", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    ws_message_rate: u32,
    /// Seconds a client may take to send its request head (slow clients are dropped).
    #[arg(long, env = "TIDINGS_HEAD_TIMEOUT", default_value_t = 10)]
    head_timeout: u64,
    /// Prefix of Redis keys.
    #[arg(long, env = "TIDINGS_KEY_PREFIX", default_value = "tidings:")]
    key_prefix: String,
    /// A directory with a built web app (index.html and assets) to serve at /app/.
    #[arg(long, env = "TIDINGS_APP_DIR")]
    app_dir: Option<PathBuf>,
    /// Require a JWT signed with HS256 and this secret to subscribe (and, without the emit key,
    /// to publish). Claims: sub, exp, subscribe and publish channel patterns.
    #[arg(
        long,
        env = "TIDINGS_JWT_SECRET",
        hide_env_values = true,
        conflicts_with = "jwt_public_key"
    )]
    jwt_secret: Option<String>,
    /// Require a JWT signed with RS256 or ES256, verified with this public key (a PEM file).
    #[arg(long, env = "TIDINGS_JWT_PUBLIC_KEY")]
    jwt_public_key: Option<PathBuf>,
    /// Accept only JWTs whose aud claim is this (repeat, or separate with commas, for more).
    #[arg(long = "jwt-audience", env = "TIDINGS_JWT_AUDIENCE", value_delimiter = ',')]
    jwt_audiences: Vec<String>,
    /// Accept only JWTs whose iss claim is this (repeat, or separate with commas, for more).
    #[arg(long = "jwt-issuer", env = "TIDINGS_JWT_ISSUER", value_delimiter = ',')]
    jwt_issuers: Vec<String>,
    /// The cookie a JWT is read from (EventSource sends only cookies).
    #[arg(long, env = "TIDINGS_JWT_COOKIE", default_value = tidings::auth::DEFAULT_TOKEN_COOKIE)]
    jwt_cookie: String,
    /// A private channel pattern such as user:{sub}: readable only by the user whose JWT sub
    /// fills {sub}. Repeat it, or separate patterns with commas.
    #[arg(
        long = "private-channel",
        env = "TIDINGS_PRIVATE_CHANNELS",
        value_delimiter = ','
    )]
    private_channels: Vec<String>,
    /// A channel pattern with presence (who is here), such as `doc:*`. Repeat it, or separate
    /// patterns with commas.
    #[arg(long = "presence", env = "TIDINGS_PRESENCE", value_delimiter = ',')]
    presence: Vec<String>,
    /// Seconds a node's presence members stay after the node stops refreshing them (it died):
    /// the bound on stale members.
    #[arg(long, env = "TIDINGS_PRESENCE_TTL", default_value_t = 20)]
    presence_ttl: u64,
    /// Members one channel's presence holds; beyond, presence_full.
    #[arg(long, env = "TIDINGS_MAX_PRESENCE_MEMBERS", default_value_t = 100)]
    max_presence_members: usize,
    /// Bytes of a member's presence data; beyond, presence_data_too_large.
    #[arg(long, env = "TIDINGS_MAX_PRESENCE_DATA_BYTES", default_value_t = 1024)]
    max_presence_data_bytes: usize,
    /// An origin (https://app.example.com) allowed to call tidings cross-origin, with
    /// credentials. Repeat it, or separate origins with commas. Default: same-origin only.
    #[arg(long = "cors-origin", env = "TIDINGS_CORS_ORIGINS", value_delimiter = ',')]
    cors_origins: Vec<String>,
}

#[derive(Args)]
struct Remote {
    /// The server's base URL.
    #[arg(long, env = "TIDINGS_URL", default_value = "http://127.0.0.1:3000")]
    url: String,
    /// The emit key (for emit).
    #[arg(long, env = "TIDINGS_EMIT_KEY", hide_env_values = true)]
    key: Option<String>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Codegen(args)) = &cli.command {
        std::process::exit(codegen(args));
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// A fatal error as one line: each cause once (an error's message often already holds its
/// source's), never a backtrace, whatever `RUST_BACKTRACE` says.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

async fn run(cli: Cli) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TIDINGS_LOG")
                .unwrap_or_else(|_| "tidings=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(*args).await,
        Some(Command::Emit {
            channel,
            event,
            data,
            idempotency_key,
            remote,
        }) => emit(channel, event, data, idempotency_key, remote).await,
        Some(Command::Tail {
            channels,
            cursor,
            token,
            remote,
        }) => tail(channels, cursor, token, remote).await,
        Some(Command::Codegen(_)) => unreachable!("handled above"),
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    // Every SSE client holds a descriptor: take the soft limit up to the hard one.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) if n < args.max_connections as u64 + 1024 => tracing::warn!(
            open_files = n,
            max_connections = args.max_connections,
            "the open-file limit is below --max-connections: streams beyond it fail to connect \
             rather than get 503; raise the hard limit (ulimit -Hn) or lower --max-connections"
        ),
        Ok(n) => tracing::debug!(open_files = n, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    let mut retention = Retention::default().max_len(args.history_max_len);
    if let Some(ttl) = args.history_ttl {
        retention = retention.ttl(Duration::from_secs(ttl));
    }
    let mut limits = Limits::default();
    limits.max_channels = args.max_channels;
    limits.max_payload_bytes = args.max_payload_bytes;
    limits.max_channel_len = args.max_channel_len;
    limits.max_connections = args.max_connections;
    limits.max_connections_per_identity = args.max_connections_per_identity;
    limits.emits_per_second = NonZeroU32::new(args.emit_rate);
    limits.emit_key_emits_per_second = NonZeroU32::new(args.emit_key_rate);
    limits.head_timeout = Duration::from_secs(args.head_timeout.max(1));
    limits.max_presence_members = args.max_presence_members;
    limits.max_presence_data_bytes = args.max_presence_data_bytes;
    limits.ws_messages_per_second =
        NonZeroU32::new(args.ws_message_rate).unwrap_or(limits.ws_messages_per_second);
    let mut config = Config::default()
        .schema(&args.schema)
        .retention(retention)
        .heartbeat(Duration::from_secs(args.heartbeat.max(1)))
        .write_timeout(Duration::from_secs(args.write_timeout.max(1)))
        .key_prefix(args.key_prefix)
        .redis_tail(args.redis_tail)
        .redis_wait(Duration::from_secs(args.redis_wait))
        .redis_max_pending(args.redis_max_pending, args.redis_max_pending_bytes)
        .idempotency_window(Duration::from_secs(args.idempotency_window.max(1)))
        .limits(limits);
    if let Some(url) = &args.redis {
        config = config.redis_url(url);
    }
    if let Some(dir) = &args.app_dir {
        // Refuse to start rather than serve a 404 for every page of a mistyped or unbuilt app.
        let index = dir.join("index.html");
        if !index.is_file() {
            bail!(
                "--app-dir {}: no index.html there (is the path right, and the app built?)",
                dir.display()
            );
        }
        config = config.app_dir(dir);
    }
    let jwt = match (&args.jwt_secret, &args.jwt_public_key) {
        (Some(secret), _) => {
            if secret.len() < 32 {
                bail!("TIDINGS_JWT_SECRET must be at least 32 bytes for HS256");
            }
            Some(tidings::JwtAuthorizer::hs256(secret))
        }
        (None, Some(path)) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read the JWT public key {}", path.display()))?;
            Some(
                tidings::JwtAuthorizer::public_key_pem(&pem)
                    .with_context(|| format!("JWT public key {}", path.display()))?,
            )
        }
        (None, None) => None,
    };
    let jwt = jwt.map(|mut jwt| {
        for aud in args.jwt_audiences.iter().filter(|a| !a.is_empty()) {
            jwt = jwt.audience(aud.trim());
        }
        for iss in args.jwt_issuers.iter().filter(|i| !i.is_empty()) {
            jwt = jwt.issuer(iss.trim());
        }
        jwt
    });
    if jwt.is_none() && !(args.jwt_audiences.is_empty() && args.jwt_issuers.is_empty()) {
        bail!("--jwt-audience and --jwt-issuer need --jwt-secret or --jwt-public-key");
    }
    if let Some(jwt) = jwt {
        tracing::info!(algorithm = ?jwt.algorithm(), cookie = %args.jwt_cookie, "JWT auth on");
        config = config.authorizer(jwt.cookie_name(args.jwt_cookie.clone()));
    }
    for pattern in args.private_channels.iter().filter(|p| !p.is_empty()) {
        config = config.private_channel(pattern.trim());
    }
    for pattern in args.presence.iter().filter(|p| !p.is_empty()) {
        config = config.presence(pattern.trim());
    }
    config = config.presence_ttl(Duration::from_secs(args.presence_ttl.max(1)));
    for origin in args.cors_origins.iter().filter(|o| !o.is_empty()) {
        let origin = origin.trim().trim_end_matches('/');
        if origin == "*" || !(origin.starts_with("http://") || origin.starts_with("https://")) {
            bail!(
                "--cors-origin {origin:?}: give a full origin such as https://app.example.com (no wildcard)"
            );
        }
        config = config.cors_origin(origin);
    }
    let generated = args.emit_key.is_none();
    if let Some(key) = args.emit_key {
        config = config.emit_key(key);
    }
    let rt = Tidings::from_config(config).await?;
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("cannot listen on {}", args.bind))?;
    let addr = listener.local_addr()?;
    let events: Vec<&str> = rt.registry().event_names().collect();
    tracing::info!(
        %addr,
        store = rt.store().kind(),
        schema = %args.schema.display(),
        events = %events.join(", "),
        "tidings is listening"
    );
    println!(
        "tidings listening on http://{addr} ({} store, {} events)",
        rt.store().kind(),
        events.len()
    );
    if generated {
        println!(
            "emit key (generated; set TIDINGS_EMIT_KEY to choose one): {}",
            rt.emit_key()
        );
        println!("demo page, ready to emit: http://{addr}/#key={}", rt.emit_key());
    } else {
        println!("demo page: http://{addr}/ (emit key from TIDINGS_EMIT_KEY)");
    }
    if let Some(dir) = &args.app_dir {
        println!("app: http://{addr}/app/ (from {})", dir.display());
    }
    tidings::serve(listener, rt, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// `tidings codegen`: the exit status. Every failure is one line on stderr.
fn codegen(args: &CodegenArgs) -> i32 {
    let mut build = tidings_codegen::Build::new(&args.schema)
        .in_dir("")
        .check(args.check);
    if let Some(dir) = &args.typescript {
        build = build.typescript(dir);
    }
    if let Some(file) = &args.rust {
        build = build.rust(file).tidings_crate(&args.tidings_crate);
    }
    let report = match build.run() {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let schema = args.schema.display();
    if args.check {
        let mut outdated = 0;
        for (path, state) in &report.files {
            let what = match state {
                tidings_codegen::FileState::Stale => "stale",
                tidings_codegen::FileState::Missing => "missing",
                _ => continue,
            };
            eprintln!("{what}: {}", path.display());
            outdated += 1;
        }
        if outdated == 0 {
            println!("{} files are current with {schema}", report.files.len());
            return 0;
        }
        eprintln!(
            "error: {outdated} of {} generated files are out of date with {schema}; run the same \
             `tidings codegen` command without --check and commit the result",
            report.files.len()
        );
        return 1;
    }
    for (path, state) in &report.files {
        let verb = match state {
            tidings_codegen::FileState::Written => "wrote",
            _ => "unchanged",
        };
        println!("{verb} {}", path.display());
    }
    0
}

async fn emit(
    channel: String,
    event: String,
    data: String,
    idempotency_key: Option<String>,
    remote: Remote,
) -> Result<()> {
    let data: serde_json::Value = serde_json::from_str(&data).context("the payload is not valid JSON")?;
    let Some(key) = remote.key else {
        bail!("no emit key: pass --key or set TIDINGS_EMIT_KEY (the server prints its key at start)");
    };
    let mut request = reqwest::Client::new()
        .post(format!("{}/emit", remote.url.trim_end_matches('/')))
        .bearer_auth(key)
        .json(&serde_json::json!({ "channel": channel, "event": event, "data": data }));
    if let Some(k) = &idempotency_key {
        request = request.header("Idempotency-Key", k);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {}", remote.url))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{status}: {body}");
    }
    println!("{}", body["id"].as_str().unwrap_or_default());
    Ok(())
}

async fn tail(
    channels: Vec<String>,
    cursor: Option<String>,
    token: Option<String>,
    remote: Remote,
) -> Result<()> {
    use futures_util::StreamExt;
    let mut url = reqwest::Url::parse(&format!("{}/realtime", remote.url.trim_end_matches('/')))?;
    {
        let mut q = url.query_pairs_mut();
        for c in &channels {
            q.append_pair("channel", c);
        }
        if let Some(c) = &cursor {
            q.append_pair("cursor", c);
        }
    }
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = &token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {}", remote.url))?;
    if !response.status().is_success() {
        let status = response.status();
        bail!("{status}: {}", response.text().await.unwrap_or_default());
    }
    let mut body = response.bytes_stream();
    let mut pending = String::new();
    let mut event = String::new();
    let mut last = String::new();
    while let Some(chunk) = body.next().await {
        pending.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            if let Some(name) = line.strip_prefix("event: ") {
                event = name.to_string();
            } else if let Some(data) = line.strip_prefix("data: ") {
                if event == "tidings.ping" {
                    continue; // the heartbeat: nothing to show
                }
                println!("{event}\t{data}");
                last.clone_from(&event);
            } else if line.is_empty() {
                event.clear();
            }
        }
    }
    if last == "tidings.expired" {
        eprintln!("stream ended: the token expired");
        return Ok(());
    }
    eprintln!("stream ended by the server");
    Ok(())
}
