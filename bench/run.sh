#!/usr/bin/env bash
# Whole-system benchmarks of tidings on this machine, with `redis-benchmark XADD` as the ceiling.
#
#   bench/run.sh                 # every scenario, RUNS=3 repetitions each, medians reported
#   RUNS=5 bench/run.sh          # more repetitions
#   QUICK=1 bench/run.sh         # tiny sizes, one run each: checks the script in seconds
#   ONLY='emit|10k' bench/run.sh # only scenarios whose id matches the regex (ids: see below)
#   OUT=/tmp/b bench/run.sh      # where raw results go (default: a new temp dir, printed)
#
# It builds the release binaries, starts its own redis-server on a free port (no persistence),
# starts a fresh tidings server for every run of every scenario, runs tidings-load against it,
# and prints markdown tables (also written to $OUT/report.md). Everything it started is killed
# on exit. Needs: cargo, redis-server, redis-cli, redis-benchmark, curl, python3.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then RUNS=${RUNS:-1}; else RUNS=${RUNS:-3}; fi
ONLY=${ONLY:-.}
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/tidings-bench.XXXXXX")}
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"
export TIDINGS_EMIT_KEY=${TIDINGS_EMIT_KEY:-bench-$RANDOM$RANDOM}

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in cargo redis-server redis-cli redis-benchmark curl python3; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done

# --- file descriptors: 10,000 SSE connections need more than the usual 1024 ----------------------
WANT_FDS=65536
HARD_FDS=$(ulimit -Hn)
FD_NOTE="open-file limit raised to $WANT_FDS"
if [[ $HARD_FDS != unlimited && $HARD_FDS -lt $WANT_FDS ]]; then
  FD_NOTE="hard open-file limit is $HARD_FDS (< $WANT_FDS wanted): soft limit raised to $HARD_FDS"
  WANT_FDS=$HARD_FDS
fi
ulimit -n "$WANT_FDS"
log "$FD_NOTE"

# --- build --------------------------------------------------------------------------------------
log "building release binaries"
cargo build --release -p tidings-cli --bin tidings -p tidings-load --bin tidings-load >&2
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BIN=$TARGET_DIR/release
[[ -x $BIN/tidings && -x $BIN/tidings-load ]] || die "binaries not found in $BIN"

# --- processes we own, killed on exit -----------------------------------------------------------
REDIS_PID=""
SERVER_PID=""
cleanup() {
  local pid
  for pid in $SERVER_PID ${LISTENER_PID:-} $REDIS_PID; do
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# CPU seconds (user + system) a process has used so far.
TICKS=$(getconf CLK_TCK)
cpu_secs() {
  awk -v t="$TICKS" '{ printf "%.3f\n", ($14 + $15) / t }' "/proc/$1/stat" 2>/dev/null || echo 0
}

now() { date +%s.%N; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }

# --- redis --------------------------------------------------------------------------------------
REDIS_PORT=$(free_port)
REDIS_URL=redis://127.0.0.1:$REDIS_PORT
mkdir -p "$OUT/redis"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$OUT/redis" --maxclients 10000 >"$OUT/redis.log" 2>&1 &
REDIS_PID=$!
for _ in $(seq 100); do
  redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
  sleep 0.05
done
redis-cli -p "$REDIS_PORT" ping >/dev/null || die "redis-server did not start (see $OUT/redis.log)"
REDIS_VERSION=$(redis-server --version | sed -n 's/.*v=\([0-9.]*\).*/\1/p')
log "redis-server $REDIS_VERSION on port $REDIS_PORT (pid $REDIS_PID)"

# --- tidings server -----------------------------------------------------------------------------
SERVER_URL=""
start_server() { # $1: redis | memory
  local args=(--bind 127.0.0.1:0 --schema "$ROOT/schema/events.json")
  [[ $1 == redis ]] && args+=(--redis "$REDIS_URL")
  : >"$OUT/server.out"
  "$BIN/tidings" "${args[@]}" >"$OUT/server.out" 2>>"$OUT/server.log" &
  SERVER_PID=$!
  SERVER_URL=""
  for _ in $(seq 200); do
    SERVER_URL=$(sed -n 's/^tidings listening on \(http:[^ ]*\).*/\1/p' "$OUT/server.out")
    [[ -n $SERVER_URL ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || die "tidings exited at start (see $OUT/server.log)"
    sleep 0.05
  done
  [[ -n $SERVER_URL ]] || die "tidings did not start (see $OUT/server.log)"
  curl -fsS "$SERVER_URL/health" >/dev/null || die "tidings /health failed"
}

stop_server() {
  [[ -n $SERVER_PID ]] || return 0
  kill "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.05; done
  kill -9 "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

# Whole-machine CPU ticks (USER_HZ) from /proc/stat: "busy total". The machine is shared: other
# engineers' builds show up here and not in our processes' counters.
machine_ticks() {
  awk '/^cpu / { busy = $2 + $3 + $4 + $7 + $8 + $9; print busy, busy + $5 + $6 }' /proc/stat
}
busy_pct() { # "busy0 total0" "busy1 total1" -> % of the whole machine (100 % = every core busy)
  awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " ");
    d = y[2] - x[2]; printf "%.1f", (d > 0 ? 100 * (y[1] - x[1]) / d : 0) }'
}

# Before each run: wait (up to IDLE_WAIT s) until the machine, with nothing of ours running, is
# less than IDLE_BUSY % busy; records what it was, so disturbed runs can be told apart.
if [[ $QUICK == 1 ]]; then IDLE_WAIT=${IDLE_WAIT:-0}; else IDLE_WAIT=${IDLE_WAIT:-60}; fi
IDLE_BUSY=${IDLE_BUSY:-15}
BACKGROUND=0
wait_idle() {
  local deadline=$((SECONDS + IDLE_WAIT)) a b
  while :; do
    a=$(machine_ticks); sleep 1; b=$(machine_ticks)
    BACKGROUND=$(busy_pct "$a" "$b")
    awk -v v="$BACKGROUND" -v m="$IDLE_BUSY" 'BEGIN { exit !(v < m) }' && return 0
    if ((SECONDS >= deadline)); then
      log "machine still ${BACKGROUND}% busy with other work after ${IDLE_WAIT}s; running anyway"
      return 0
    fi
  done
}

# Runs one measured command ($@) with stdout to $base.out; appends its record to $RESULTS.
#   measure ID RUN SERVER_PID(or "") KIND(load|xadd) -- command...
measure() {
  local id=$1 run=$2 spid=$3 kind=$4
  shift 5
  local base=$OUT/$id.$run s0=0 s1=0 r0 r1 t0 t1 m0 m1 rc=0
  wait_idle
  if [[ -n $spid ]]; then s0=$(cpu_secs "$spid"); fi
  r0=$(cpu_secs "$REDIS_PID")
  m0=$(machine_ticks)
  t0=$(now)
  local TIMEFORMAT='%U %S'
  { time timeout --foreground 900 "$@" >"$base.out" 2>"$base.err"; } 2>"$base.time" || rc=$?
  t1=$(now)
  m1=$(machine_ticks)
  if [[ -n $spid ]]; then s1=$(cpu_secs "$spid"); fi
  r1=$(cpu_secs "$REDIS_PID")
  python3 - "$id" "$run" "$rc" "$kind" "$(minus "$t1" "$t0")" "$(minus "$s1" "$s0")" \
    "$(minus "$r1" "$r0")" "$(awk 'END { printf "%.3f", $1 + $2 }' "$base.time" 2>/dev/null || echo 0)" \
    "$BACKGROUND" "$(busy_pct "$m0" "$m1")" "$base" >>"$RESULTS" <<'PY'
import csv, json, sys
sid, run, rc, kind, wall, scpu, rcpu, lcpu, bg, busy, base = sys.argv[1:]
result = None
try:
    if kind == "xadd":  # redis-benchmark --csv: a header row, then "test","rps",...
        rows = [r for r in csv.reader(open(base + ".out")) if r]
        result = {"requests_per_sec": float(rows[-1][1]), "lost": 0, "duplicated": 0}
    else:  # tidings-load prints one JSON object
        result = json.loads(open(base + ".out").read().strip().splitlines()[-1])
except (OSError, ValueError, IndexError):
    pass
try:
    lines = [l for l in open(base + ".err").read().splitlines() if l.strip()]
except OSError:
    lines = []
# anyhow prints "Error: ..." first (then a backtrace when RUST_BACKTRACE is set).
first = next((l for l in lines if l.startswith("Error:")), lines[-1] if lines else f"exit {rc}")
error = first.strip() if int(rc) else None
print(json.dumps({"id": sid, "run": int(run), "rc": int(rc), "wall": float(wall),
                  "server_cpu": float(scpu), "redis_cpu": float(rcpu), "load_cpu": float(lcpu),
                  "background_pct": float(bg), "machine_busy_pct": float(busy),
                  "result": result, "error": error}))
PY
  [[ $rc == 0 ]] || log "$id run $run failed (exit $rc): $(grep -m1 '^Error:' "$base.err" || tail -n 1 "$base.err")"
}

# One scenario of tidings-load, RUNS times, each against a fresh server.
#   scenario ID STORE(redis|memory|inproc-redis|inproc-memory) -- tidings-load args...
scenario() {
  local id=$1 store=$2
  shift 3
  [[ $id =~ $ONLY ]] || return 0
  local r
  for r in $(seq "$RUNS"); do
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    local args=(--json "$@")
    case $store in
      redis) start_server redis; args+=(--url "$SERVER_URL" --server-pid "$SERVER_PID" --redis "$REDIS_URL") ;;
      memory) start_server memory; args+=(--url "$SERVER_URL" --server-pid "$SERVER_PID") ;;
      inproc-redis) args+=(--inproc --redis "$REDIS_URL" --schema "$ROOT/schema/events.json") ;;
      inproc-memory) args+=(--inproc --schema "$ROOT/schema/events.json") ;;
    esac
    log "$id run $r/$RUNS: tidings-load ${args[*]}"
    measure "$id" "$r" "${SERVER_PID:-}" load -- "$BIN/tidings-load" "${args[@]}"
    stop_server
  done
}

# redis-benchmark XADD, RUNS times. With "notify": the way tidings makes Redis work (keyspace
# notifications for streams on, one PSUBSCRIBE listener), for comparison; not the ceiling.
LISTENER_PID=""
xadd() { # id pipeline [notify]
  local id=$1 p=$2 notify=${3:-} r
  [[ $id =~ $ONLY ]] || return 0
  if [[ $notify == notify ]]; then
    redis-cli -p "$REDIS_PORT" config set notify-keyspace-events tK >/dev/null
    redis-cli -p "$REDIS_PORT" psubscribe '__keyspace@0__:*' >/dev/null &
    LISTENER_PID=$!
  else
    # A tidings server may have enabled keyspace notifications; the ceiling is measured without.
    redis-cli -p "$REDIS_PORT" config set notify-keyspace-events "" >/dev/null
  fi
  for r in $(seq "$RUNS"); do
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    log "$id run $r/$RUNS: redis-benchmark -n $XADD_N -c 64 -P $p XADD bench:k MAXLEN ~ 1000 * f v"
    measure "$id" "$r" "" xadd -- redis-benchmark -p "$REDIS_PORT" -n "$XADD_N" -c 64 -P "$p" --csv \
      XADD bench:k MAXLEN '~' 1000 '*' f v
  done
  if [[ -n $LISTENER_PID ]]; then
    kill "$LISTENER_PID" 2>/dev/null || true
    wait "$LISTENER_PID" 2>/dev/null || true
    LISTENER_PID=""
    redis-cli -p "$REDIS_PORT" config set notify-keyspace-events "" >/dev/null
  fi
}

# --- sizes (each can be overridden from the environment) -----------------------------------------
if [[ $QUICK == 1 ]]; then
  : "${XADD_N:=5000}" "${EMIT_EVENTS:=3000}" "${INPROC_EVENTS:=3000}"
  : "${FAN_SUBS:=100}" "${FAN_EVENTS:=500}" "${FAN_RATE:=500}"
  : "${BIG_SUBS:=300}" "${BIG_EVENTS:=40}" "${BIG_RATE:=40}"
  : "${DELIV_SUBS:=20}" "${DELIV_EVENTS:=1000}"
  : "${FILT_SUBS:=100}" "${FILT_EVENTS:=1000}"
  : "${STORM_SUBS:=200}" "${STORM_CHANNELS:=20}" "${STORM_EVENTS:=400}" "${STORM_MISSED:=200}"
else
  : "${XADD_N:=200000}" "${EMIT_EVENTS:=200000}" "${INPROC_EVENTS:=400000}"
  : "${FAN_SUBS:=1000}" "${FAN_EVENTS:=20000}" "${FAN_RATE:=2000}"
  : "${BIG_SUBS:=10000}" "${BIG_EVENTS:=50}" "${BIG_RATE:=5}"
  : "${DELIV_SUBS:=200}" "${DELIV_EVENTS:=20000}"
  : "${FILT_SUBS:=1000}" "${FILT_EVENTS:=20000}"
  : "${STORM_SUBS:=10000}" "${STORM_CHANNELS:=1000}" "${STORM_EVENTS:=4000}" "${STORM_MISSED:=2000}"
fi
EMIT_CONC=${EMIT_CONC:-64} INPROC_TASKS=${INPROC_TASKS:-1024}

START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
top -bn1 | head -20 >"$OUT/top-before.txt" 2>/dev/null || true

# --- scenarios (ids are what ONLY= matches) -----------------------------------------------------
xadd xadd-p1 1
xadd xadd-p16 16
xadd xadd-p16-notify 16 notify
# Emits spread over 16 channels with one subscriber each: every event is checked for loss and
# duplication once, and no single subscriber has to absorb the whole emit rate (see BENCHMARKS.md).
scenario emit-redis redis -- --subscribers 16 --channels 16 --events "$EMIT_EVENTS" --concurrency "$EMIT_CONC"
scenario inproc-redis inproc-redis -- --events "$INPROC_EVENTS" --concurrency "$INPROC_TASKS" --channels 64
scenario fan1k-redis redis -- --subscribers "$FAN_SUBS" --channels "$FAN_SUBS" --events "$FAN_EVENTS" \
  --rate "$FAN_RATE" --concurrency 64
scenario fan10k-redis redis -- --subscribers "$BIG_SUBS" --channels 1 --events "$BIG_EVENTS" \
  --rate "$BIG_RATE" --concurrency 4
scenario deliver-redis redis -- --subscribers "$DELIV_SUBS" --channels 1 --events "$DELIV_EVENTS" --concurrency 16
scenario emit-memory memory -- --subscribers 16 --channels 16 --events "$EMIT_EVENTS" --concurrency "$EMIT_CONC"
scenario inproc-memory inproc-memory -- --events "$INPROC_EVENTS" --concurrency "$INPROC_TASKS" --channels 64
scenario fan1k-memory memory -- --subscribers "$FAN_SUBS" --channels "$FAN_SUBS" --events "$FAN_EVENTS" \
  --rate "$FAN_RATE" --concurrency 64
scenario fan10k-memory memory -- --subscribers "$BIG_SUBS" --channels 1 --events "$BIG_EVENTS" \
  --rate "$BIG_RATE" --concurrency 4
scenario deliver-memory memory -- --subscribers "$DELIV_SUBS" --channels 1 --events "$DELIV_EVENTS" --concurrency 16
# The same fan-out over WebSocket (GET /ws, one subscribe message per connection).
scenario fan1k-ws-redis redis -- --transport ws --subscribers "$FAN_SUBS" --channels "$FAN_SUBS" \
  --events "$FAN_EVENTS" --rate "$FAN_RATE" --concurrency 64
scenario fan10k-ws-redis redis -- --transport ws --subscribers "$BIG_SUBS" --channels 1 --events "$BIG_EVENTS" \
  --rate "$BIG_RATE" --concurrency 4
scenario deliver-ws-redis redis -- --transport ws --subscribers "$DELIV_SUBS" --channels 1 --events "$DELIV_EVENTS" \
  --concurrency 16
scenario fan10k-ws-memory memory -- --transport ws --subscribers "$BIG_SUBS" --channels 1 --events "$BIG_EVENTS" \
  --rate "$BIG_RATE" --concurrency 4
# Filters: FILT_SUBS subscribers on one channel, each with its own filter {"user":"u<i>"}, so
# each event (a chat.message by u<seq mod FILT_SUBS>) matches one of them and every event is
# tested by every filter. Next to it the same deliveries without filters: FILT_SUBS subscribers
# on as many channels, each event on one channel. The difference is what filtering costs.
scenario filter1k-redis redis -- --filtered --subscribers "$FILT_SUBS" --channels 1 --events "$FILT_EVENTS" --concurrency 16
scenario unfiltered1k-redis redis -- --chat --subscribers "$FILT_SUBS" --channels "$FILT_SUBS" --events "$FILT_EVENTS" \
  --concurrency 16
scenario filter1k-memory memory -- --filtered --subscribers "$FILT_SUBS" --channels 1 --events "$FILT_EVENTS" --concurrency 16
# The same filters written so that the server cannot index them by value: every event is tested
# by every filter.
scenario filter1k-unindexed-redis redis -- --filtered --unindexed --subscribers "$FILT_SUBS" --channels 1 \
  --events "$FILT_EVENTS" --concurrency 16
scenario filter1k-unindexed-memory memory -- --filtered --unindexed --subscribers "$FILT_SUBS" --channels 1 \
  --events "$FILT_EVENTS" --concurrency 16
scenario unfiltered1k-memory memory -- --chat --subscribers "$FILT_SUBS" --channels "$FILT_SUBS" --events "$FILT_EVENTS" \
  --concurrency 16
# A reconnect storm: every subscriber drops at once, misses STORM_MISSED events (spread over the
# channels), and all reconnect at once with their cursors, as after a node restart behind a load
# balancer; measured until the last one has its replay and tidings.ready.
scenario storm-redis redis -- --subscribers "$STORM_SUBS" --channels "$STORM_CHANNELS" --events "$STORM_EVENTS" \
  --storm-events "$STORM_MISSED" --concurrency 16
scenario storm-memory memory -- --subscribers "$STORM_SUBS" --channels "$STORM_CHANNELS" --events "$STORM_EVENTS" \
  --storm-events "$STORM_MISSED" --concurrency 16

END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
KEYSPACE=$(redis-cli -p "$REDIS_PORT" config get notify-keyspace-events | tail -n 1)

# --- report -------------------------------------------------------------------------------------
GIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain -- src 2>/dev/null) ]]; then GIT="$GIT with uncommitted changes in src/"; fi
export GIT REDIS_VERSION FD_NOTE START_LOAD END_LOAD KEYSPACE RUNS QUICK
export EMIT_CONC INPROC_TASKS FAN_SUBS FAN_RATE BIG_SUBS BIG_RATE DELIV_SUBS FILT_SUBS STORM_SUBS STORM_CHANNELS STORM_MISSED
export SIZES="xadd n=$XADD_N; emit events=$EMIT_EVENTS conc=$EMIT_CONC; inproc events=$INPROC_EVENTS tasks=$INPROC_TASKS; fan1k subs=$FAN_SUBS events=$FAN_EVENTS rate=$FAN_RATE/s; fan10k subs=$BIG_SUBS events=$BIG_EVENTS rate=$BIG_RATE/s; deliver subs=$DELIV_SUBS events=$DELIV_EVENTS; filter subs=$FILT_SUBS events=$FILT_EVENTS; storm subs=$STORM_SUBS channels=$STORM_CHANNELS events=$STORM_EVENTS missed=$STORM_MISSED"
python3 - "$RESULTS" <<'PY' | tee "$OUT/report.md"
import json, os, statistics, sys

runs = {}
for line in open(sys.argv[1]):
    rec = json.loads(line)
    runs.setdefault(rec["id"], []).append(rec)

def ok(rec):
    return rec["rc"] == 0 and rec["result"] is not None

def values(sid, f):
    out = []
    for rec in runs.get(sid, []):
        if ok(rec):
            try:
                v = f(rec)
            except (KeyError, TypeError):
                v = None
            if v is not None:
                out.append(float(v))
    return out

def med(sid, f):
    v = values(sid, f)
    return statistics.median(v) if v else None

def fmt(v, unit=""):
    if v is None:
        return "—"
    if unit == "ms":
        return f"{v:.2f} ms"
    if unit == "B":
        return f"{v:,.0f} B"
    if unit == "%":
        return f"{v:.0f} %"
    if unit == "s":
        return f"{v:.2f} s"
    if unit == "µs":
        return f"{v:.1f} µs"
    return f"{v:,.0f}{unit}"

cpu = open("/proc/cpuinfo").read()
model = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("model name")), "?")
print(f"Machine: {os.cpu_count()} cores, {model}; redis-server {os.environ['REDIS_VERSION']}; "
      f"{os.environ['FD_NOTE']}.")
print(f"tidings at {os.environ['GIT']}; {os.environ['RUNS']} run(s) per scenario"
      f"{' (QUICK sizes: the verdicts mean nothing)' if os.environ['QUICK'] == '1' else ''}; load average before "
      f"{os.environ['START_LOAD']}, after {os.environ['END_LOAD']}; Redis notify-keyspace-events "
      f"after the tidings runs: {os.environ['KEYSPACE'] or '(empty)'}.")
print(f"Sizes: {os.environ['SIZES']}.")
print()

E = os.environ
n = lambda k: f"{int(E[k]):,}"
FAN = f"{n('FAN_SUBS')} subs × {n('FAN_SUBS')} channels at {n('FAN_RATE')} emits/s"
BIG = f"{n('BIG_SUBS')} subs, 1 channel, {n('BIG_RATE')} emits/s"
DEL = f"deliveries, {n('DELIV_SUBS')} subs, 1 channel"
EMIT = f"HTTP emit, validated, {n('EMIT_CONC')} conc."
INPROC = f"in-process typed emit, {n('INPROC_TASKS')} tasks"
STORM = f"reconnect storm, {n('STORM_SUBS')} clients with cursors on {n('STORM_CHANNELS')} channels, {n('STORM_MISSED')} events missed"
FILT = f"{n('FILT_SUBS')} subs, each event for 1"
STORM_S = lambda r: r["result"]["storm"]["secs_to_last_ready"]
STORM_CPU = lambda r: r["result"]["storm"]["server_cpu_secs"]

p1 = med("xadd-p1", lambda r: r["result"]["requests_per_sec"])
p16 = med("xadd-p16", lambda r: r["result"]["requests_per_sec"])

R = lambda k: (lambda r: r["result"][k])
LAT = lambda k: (lambda r: r["result"]["latency_ms"][k])
RSS = lambda r: r["result"]["rss_per_connection_bytes"]
# tidings CPU per event emitted (and delivered once), over the whole run.
CPU_EV = lambda r: 1e6 * r["server_cpu"] / r["result"]["events"]
unf_r = med("unfiltered1k-redis", R("deliveries_per_sec"))
unf_m = med("unfiltered1k-memory", R("deliveries_per_sec"))
unf_r_cpu = med("unfiltered1k-redis", CPU_EV)
unf_m_cpu = med("unfiltered1k-memory", CPU_EV)

# id, label, metric, unit, target text, target check (value -> bool) or None, ceiling (name, value)
rows = [
    ("xadd-p1", "redis-benchmark XADD -P 1 (req/s)", R("requests_per_sec"), "", "ceiling", None, None),
    ("xadd-p16", "redis-benchmark XADD -P 16 (req/s)", R("requests_per_sec"), "", "ceiling", None, None),
    ("xadd-p16-notify", "same, with keyspace notifications + 1 listener, as tidings runs Redis (req/s)",
     R("requests_per_sec"), "", "(information)", None, ("XADD -P 16", p16)),
    ("emit-redis", f"{EMIT}, Redis (emits/s)", R("emits_per_sec"), "",
     "≥ 30,000", lambda v: v >= 30000, ("XADD -P 1", p1)),
    ("inproc-redis", f"{INPROC}, Redis (emits/s)", R("emits_per_sec"), "",
     f"≥ ½ XADD -P 16 = {fmt(p16 / 2 if p16 else None)}", (lambda v: p16 is not None and v >= p16 / 2),
     ("XADD -P 16", p16)),
    ("fan1k-redis", f"{FAN}, Redis: p99", LAT("p99"), "ms", "≤ 5 ms",
     lambda v: v <= 5, None),
    ("fan10k-redis", f"{BIG}, Redis: p99", LAT("p99"), "ms", "≤ 50 ms",
     lambda v: v <= 50, None),
    ("fan10k-redis", f"{BIG}, Redis: RSS per connection", RSS, "B", "≤ 10 KB",
     lambda v: v <= 10000, None),
    ("deliver-redis", f"{DEL}, Redis (deliveries/s)", R("deliveries_per_sec"), "",
     "≥ 300,000", lambda v: v >= 300000, None),
    ("emit-memory", f"{EMIT}, memory (emits/s)", R("emits_per_sec"), "",
     "(≥ 30,000)", lambda v: v >= 30000, ("XADD -P 1", p1)),
    ("inproc-memory", f"{INPROC}, memory (emits/s)", R("emits_per_sec"), "",
     "—", None, ("XADD -P 16", p16)),
    ("fan1k-memory", f"{FAN}, memory: p99", LAT("p99"), "ms", "(≤ 5 ms)",
     lambda v: v <= 5, None),
    ("fan10k-memory", f"{BIG}, memory: p99", LAT("p99"), "ms", "(≤ 50 ms)",
     lambda v: v <= 50, None),
    ("fan10k-memory", f"{BIG}, memory: RSS per connection", RSS, "B", "(≤ 10 KB)",
     lambda v: v <= 10000, None),
    ("deliver-memory", f"{DEL}, memory (deliveries/s)", R("deliveries_per_sec"), "",
     "(≥ 300,000)", lambda v: v >= 300000, None),
    ("fan1k-ws-redis", f"WebSocket: {FAN}, Redis: p99", LAT("p99"), "ms", "(≤ 5 ms, as SSE)",
     lambda v: v <= 5, None),
    ("fan10k-ws-redis", f"WebSocket: {BIG}, Redis: p99", LAT("p99"), "ms", "(≤ 50 ms, as SSE)",
     lambda v: v <= 50, None),
    ("fan10k-ws-redis", f"WebSocket: {BIG}, Redis: RSS per connection", RSS, "B", "(information)", None, None),
    ("deliver-ws-redis", f"WebSocket: {DEL}, Redis (deliveries/s)", R("deliveries_per_sec"), "",
     "(≥ 300,000, as SSE)", lambda v: v >= 300000, None),
    ("fan10k-ws-memory", f"WebSocket: {BIG}, memory: RSS per connection", RSS, "B", "(information)", None, None),
    ("unfiltered1k-redis", f"{FILT} by its channel, Redis (deliveries/s)", R("deliveries_per_sec"), "",
     "(information)", None, None),
    ("filter1k-redis", f"{FILT} by its filter, one channel, Redis (deliveries/s)", R("deliveries_per_sec"), "",
     "(information)", None, ("unfiltered", unf_r)),
    ("unfiltered1k-redis", f"{FILT} by its channel, Redis: tidings CPU per event", CPU_EV, "µs",
     "(information)", None, None),
    ("filter1k-redis", f"{FILT} by its filter, Redis: tidings CPU per event", CPU_EV, "µs",
     "(information)", None, ("unfiltered", unf_r_cpu)),
    ("filter1k-unindexed-redis", f"{FILT} by an unindexable filter, Redis (deliveries/s)", R("deliveries_per_sec"), "",
     "(information)", None, ("unfiltered", unf_r)),
    ("filter1k-unindexed-redis", f"{FILT} by an unindexable filter, Redis: tidings CPU per event", CPU_EV, "µs",
     "(information)", None, ("unfiltered", unf_r_cpu)),
    ("unfiltered1k-memory", f"{FILT} by its channel, memory (deliveries/s)", R("deliveries_per_sec"), "",
     "(information)", None, None),
    ("filter1k-memory", f"{FILT} by its filter, one channel, memory (deliveries/s)", R("deliveries_per_sec"), "",
     "(information)", None, ("unfiltered", unf_m)),
    ("unfiltered1k-memory", f"{FILT} by its channel, memory: tidings CPU per event", CPU_EV, "µs",
     "(information)", None, None),
    ("filter1k-memory", f"{FILT} by its filter, memory: tidings CPU per event", CPU_EV, "µs",
     "(information)", None, ("unfiltered", unf_m_cpu)),
    ("filter1k-unindexed-memory", f"{FILT} by an unindexable filter, memory (deliveries/s)", R("deliveries_per_sec"), "",
     "(information)", None, ("unfiltered", unf_m)),
    ("filter1k-unindexed-memory", f"{FILT} by an unindexable filter, memory: tidings CPU per event", CPU_EV, "µs",
     "(information)", None, ("unfiltered", unf_m_cpu)),
    ("storm-redis", f"{STORM}, Redis: until the last is ready", STORM_S, "s", "(information)", None, None),
    ("storm-redis", f"{STORM}, Redis: tidings CPU in that time", STORM_CPU, "s", "(information)", None, None),
    ("storm-memory", f"{STORM}, memory: until the last is ready", STORM_S, "s", "(information)", None, None),
    ("storm-memory", f"{STORM}, memory: tidings CPU in that time", STORM_CPU, "s", "(information)", None, None),
]

print("| scenario | median | target | ratio to ceiling | lost | duplicated | runs (ok/all: each run) |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for sid, label, f, unit, target, check, ceiling in rows:
    if sid not in runs:
        continue
    recs = runs[sid]
    good = [r for r in recs if ok(r)]
    m = med(sid, f)
    verdict = ""
    if check is not None:
        # Every run must have succeeded (for 10k: all subscribers connected) with nothing lost.
        clean = all(r["result"].get("lost", 0) == 0 and r["result"].get("duplicated", 0) == 0 for r in good)
        all_ok = len(good) == len(recs) and m is not None and clean
        verdict = " — met" if all_ok and check(m) else " — not met"
    ratio = "—"
    if ceiling and ceiling[1] and m is not None:
        ratio = f"{m / ceiling[1]:.2f} × {ceiling[0]}"
    lost = sum(r["result"].get("lost", 0) for r in good)
    dup = sum(r["result"].get("duplicated", 0) for r in good)
    resets = sum(r["result"].get("resets", 0) for r in good)
    lagged = sum(r["result"].get("lagged", 0) for r in good)
    lost_text = str(lost) + (f" ({lagged} lagged, {resets} resets)" if lost and (lagged or resets) else "")
    each = ", ".join(fmt(v, unit) for v in values(sid, f))
    fails = [f"run {r['run']} failed: {r['error']}" for r in recs if not ok(r)]
    runs_text = f"{len(good)}/{len(recs)}: {each}" + ("; " + "; ".join(fails) if fails else "")
    print(f"| {label} | {fmt(m, unit)} | {target}{verdict} | {ratio} | {lost_text} | {dup} | {runs_text} |")

print()
print("Details: medians over the successful runs. CPU is in % of one core over the run's wall time "
      "(2 cores = 200 %); \"others\" = whole-machine busy minus our three processes, i.e. other "
      "engineers' work on this shared machine plus our own softirq time; \"before\" = machine busy in "
      "the idle second before the run.")
print()
print("| scenario | emits/s | deliveries/s | p50 | p99 | max | connect s | reconnects | lagged "
      "| Redis conns | tidings CPU | redis CPU | load tool CPU | others | before |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
pct = lambda k: (lambda r: 100 * r[k] / r["wall"])
others = lambda r: max(0.0, 2 * r["machine_busy_pct"]
                       - 100 * (r["server_cpu"] + r["redis_cpu"] + r["load_cpu"]) / r["wall"])
for sid in runs:
    xadd = sid.startswith("xadd")
    cols = [
        fmt(med(sid, R("requests_per_sec" if xadd else "emits_per_sec"))),
        fmt(med(sid, R("deliveries_per_sec"))),
        fmt(med(sid, LAT("p50")), "ms"),
        fmt(med(sid, LAT("p99")), "ms"),
        fmt(med(sid, LAT("max")), "ms"),
        (lambda v: "—" if v is None else f"{v:.1f}")(med(sid, R("connect_secs"))),
        fmt(med(sid, R("reconnects"))),
        fmt(med(sid, R("lagged"))),
        fmt(med(sid, R("redis_connections"))),
        "—" if xadd else (fmt(med(sid, pct("server_cpu")), "%") if not sid.startswith("inproc") else "(in load tool)"),
        fmt(med(sid, pct("redis_cpu")), "%") if "redis" in sid or xadd else "—",
        fmt(med(sid, pct("load_cpu")), "%") + (" (redis-benchmark)" if xadd else ""),
        fmt(med(sid, others), "%"),
        fmt(med(sid, lambda r: 2 * r["background_pct"]), "%"),
    ]
    print(f"| {sid} | " + " | ".join(cols) + " |")
PY
log "raw results in $OUT (results.jsonl, per-run .json/.err, server.log, report.md)"
