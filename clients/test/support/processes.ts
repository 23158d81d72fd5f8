// Real processes for the tests: the tidings server and redis-server, on free ports of 127.0.0.1.
// Every spawned process is recorded (in memory, and as a pid file that globalSetup's teardown
// reads) so it is killed at the end even when a test or a whole worker fails.
import { spawn, type ChildProcess } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { inject } from "vitest";
import type { Envelope } from "../generated/index.js";

export const EMIT_KEY = "vitest-emit-key";
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
// The test schema (a copy of the demo's), which test/generated is generated from.
export const schemaPath = path.join(repoRoot, "tests", "events", "events.json");

const live = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of live) child.kill("SIGKILL");
});

/** A spawned process that is killed in teardown whatever happens. */
export interface Spawned {
  readonly child: ChildProcess;
  /** Everything it printed so far (stdout and stderr). */
  output(): string;
  /** Resolves when it has exited. */
  readonly exited: Promise<void>;
  /** Kills it (SIGKILL unless told otherwise) and waits for the exit. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export function spawnTracked(name: string, command: string, args: string[], env: NodeJS.ProcessEnv): Spawned {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], env });
  live.add(child);
  const pidFile = child.pid === undefined ? undefined : path.join(inject("pidDir"), `${child.pid}-${name}`);
  if (pidFile) writeFileSync(pidFile, String(child.pid));
  let out = "";
  child.stdout?.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve) => {
    const done = () => {
      live.delete(child);
      if (pidFile) rmSync(pidFile, { force: true });
      resolve();
    };
    child.once("exit", done);
    child.once("error", (e) => {
      out += `\n[spawn error] ${e.message}`;
      done();
    });
  });
  const running = () => child.exitCode === null && child.signalCode === null && live.has(child);
  return {
    child,
    output: () => out,
    exited,
    async stop(signal = "SIGKILL") {
      if (running()) child.kill(signal);
      const timer = setTimeout(() => {
        if (running()) child.kill("SIGKILL");
      }, 3000);
      await exited;
      clearTimeout(timer);
    },
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A port nobody listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const address = srv.address();
      const port = typeof address === "object" && address ? address.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith("TIDINGS_") || k === "REDIS_URL") continue;
    env[k] = v;
  }
  return { ...env, TIDINGS_LOG: "tidings=warn,warn", ...extra };
}

export interface ServerOptions {
  /** Entries kept per channel (`--history-max-len`). */
  historyMaxLen?: number;
  /** A Redis URL; the embedded store otherwise. */
  redis?: string;
  /** Seconds between heartbeats. */
  heartbeat?: number;
  /** Require HS256 JWTs signed with this secret (`--jwt-secret`, at least 32 bytes). */
  jwtSecret?: string;
  /** `--private-channel` patterns, such as `user:{sub}`. */
  privateChannels?: readonly string[];
  /** Streams the node holds at once (`--max-connections`); beyond, 503 `node_full`. */
  maxConnections?: number;
  /** Streams one JWT `sub` holds (`--max-connections-per-identity`); beyond, 429. */
  maxConnectionsPerIdentity?: number;
  /** `--presence` channel patterns, such as `doc:*`. */
  presence?: readonly string[];
}

/** A running tidings server. */
export interface Server {
  readonly port: number;
  readonly url: string;
  readonly process: Spawned;
  /** POST /emit; returns the stream id. */
  emit(channel: string, event: string, data: unknown): Promise<string>;
  /** A chat.message with `text`. */
  say(channel: string, text: string): Promise<string>;
  /** GET /history (newest `limit`, oldest first). */
  history(channel: string, limit?: number): Promise<Envelope[]>;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export async function startServer(options: ServerOptions = {}): Promise<Server> {
  let lastError: unknown;
  for (let tries = 0; tries < 3; tries++) {
    const port = await freePort();
    try {
      return await startOn(port, options);
    } catch (e) {
      lastError = e; // most likely someone took the port meanwhile: try another
    }
  }
  throw lastError;
}

async function startOn(port: number, options: ServerOptions): Promise<Server> {
  const args = ["--bind", `127.0.0.1:${port}`, "--schema", schemaPath];
  args.push("--history-max-len", String(options.historyMaxLen ?? 1000));
  args.push("--heartbeat", String(options.heartbeat ?? 5));
  if (options.redis) args.push("--redis", options.redis);
  if (options.jwtSecret) args.push("--jwt-secret", options.jwtSecret);
  for (const pattern of options.privateChannels ?? []) args.push("--private-channel", pattern);
  for (const pattern of options.presence ?? []) args.push("--presence", pattern);
  if (options.maxConnections !== undefined) args.push("--max-connections", String(options.maxConnections));
  if (options.maxConnectionsPerIdentity !== undefined) {
    args.push("--max-connections-per-identity", String(options.maxConnectionsPerIdentity));
  }
  const proc = spawnTracked(`tidings-${port}`, inject("tidingsBin"), args, cleanEnv({ TIDINGS_EMIT_KEY: EMIT_KEY }));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 15_000;
  let exited = false;
  void proc.exited.then(() => (exited = true));
  for (;;) {
    if (exited) throw new Error(`tidings exited before it was healthy:\n${proc.output()}`);
    try {
      const res = await fetch(`${url}/health`);
      if (res.ok) {
        await res.body?.cancel();
        break;
      }
      await res.body?.cancel();
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await proc.stop();
      throw new Error(`tidings did not answer /health within 15 s:\n${proc.output()}`);
    }
    await sleep(25);
  }
  const emit = async (channel: string, event: string, data: unknown): Promise<string> => {
    const res = await fetch(`${url}/emit`, {
      method: "POST",
      headers: { authorization: `Bearer ${EMIT_KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ channel, event, data }),
    });
    const body = (await res.json()) as { id?: string };
    if (!res.ok || typeof body.id !== "string") throw new Error(`emit failed: ${res.status} ${JSON.stringify(body)}`);
    return body.id;
  };
  return {
    port,
    url,
    process: proc,
    emit,
    say: (channel, text) => emit(channel, "chat.message", { text, user: "vitest" }),
    async history(channel, limit = 1000) {
      const res = await fetch(`${url}/history?channel=${encodeURIComponent(channel)}&limit=${limit}`);
      const body = (await res.json()) as { entries: Envelope[] };
      if (!res.ok) throw new Error(`history failed: ${res.status} ${JSON.stringify(body)}`);
      return body.entries;
    },
    stop: (signal) => proc.stop(signal),
  };
}

/** A throwaway redis-server: no persistence, killed in teardown. */
export interface Redis {
  readonly url: string;
  stop(): Promise<void>;
}

export async function startRedis(): Promise<Redis> {
  const port = await freePort();
  const proc = spawnTracked(
    `redis-${port}`,
    "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
    cleanEnv({}),
  );
  const deadline = Date.now() + 10_000;
  while (!(await ping(port))) {
    if (Date.now() > deadline) {
      await proc.stop();
      throw new Error(`redis-server did not answer PING:\n${proc.output()}`);
    }
    await sleep(25);
  }
  return { url: `redis://127.0.0.1:${port}/`, stop: () => proc.stop() };
}

function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    let answer = "";
    const finish = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => finish(false));
    socket.once("error", () => finish(false));
    socket.once("connect", () => socket.write("PING\r\n"));
    socket.on("data", (d: Buffer) => {
      answer += d.toString();
      if (answer.includes("\r\n")) finish(answer.startsWith("+PONG"));
    });
  });
}
