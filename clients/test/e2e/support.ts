// What the browser suites share: where things are, child processes that are always killed,
// commands run to completion, the binaries and app builds a suite serves, free ports, polling,
// HTTP without a keep-alive pool, Chromium started the way this machine allows, and pages whose
// errors are kept for a failure's report.
import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, existsSync, readFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { dirname, join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";

export const CLIENTS = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const ROOT = resolve(CLIENTS, "..");
export const RESULTS = join(CLIENTS, "test-results");
// Where cargo puts binaries: CARGO_TARGET_DIR (relative to the repository) when set.
export const TARGET_DIR = process.env.CARGO_TARGET_DIR ? resolve(ROOT, process.env.CARGO_TARGET_DIR) : join(ROOT, "target");
export const CHROMIUM = process.env.TIDINGS_E2E_CHROMIUM ?? "/usr/bin/chromium";

// ---------------------------------------------------------------------------------------------
// Processes: every child is tracked and SIGKILLed at the end, even when a hook or test fails.

export const children = new Set<ChildProcess>();

export function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

export async function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((done) => child.once("exit", () => done()));
  child.kill("SIGKILL");
  await exited;
}

export async function killAll(): Promise<void> {
  await Promise.all([...children].map(kill));
}

// Last resort when the worker exits without running afterAll (e.g. a hook timed out).
process.once("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});

/** Runs a command to completion; rejects with its output when it fails. */
export function run(cmd: string, args: string[], cwd: string): Promise<void> {
  return new Promise((done, fail) => {
    const child = track(spawn(cmd, args, { cwd, stdio: ["ignore", "pipe", "pipe"] }));
    let output = "";
    child.stdout?.on("data", (b: Buffer) => (output += b.toString()));
    child.stderr?.on("data", (b: Buffer) => (output += b.toString()));
    child.once("error", fail);
    child.once("exit", (code) =>
      code === 0 ? done() : fail(new Error(`${cmd} ${args.join(" ")} failed (${code}):\n${output}`)),
    );
  });
}

/**
 * Starts a server with stdout and stderr in the file `log` (read back when it fails to start or a
 * test fails). Its environment is PATH and `env` only: nothing of the caller's (REDIS_URL,
 * TIDINGS_*) leaks in.
 */
export async function spawnLogged(cmd: string, args: string[], env: Record<string, string>, log: string): Promise<ChildProcess> {
  const out = createWriteStream(log);
  await new Promise((done) => out.once("open", done));
  return track(spawn(cmd, args, { env: { PATH: process.env.PATH ?? "", ...env }, stdio: ["ignore", out, out] }));
}

// ---------------------------------------------------------------------------------------------
// What a suite serves. A prebuilt binary named by the environment (as for the unit suite) means
// cargo is not run at all: on a small machine that may be compiling something else.

/** `$env` when set, else `name` as `cargo build` leaves it in the target dir. */
export function binaryPath(env: string, name: string): string {
  return process.env[env] || join(TARGET_DIR, "debug", name);
}

export async function ensureBinary(env: string, binary: string, cargoBuild: string[]): Promise<void> {
  if (process.env[env]) {
    if (!existsSync(binary)) throw new Error(`${env}=${binary} does not exist`);
  } else {
    await run("cargo", ["build", ...cargoBuild], ROOT);
  }
}

/**
 * Builds the npm workspace `workspace` from the root, as the README does: always, since a page
 * built before a change of the client would hide it (a build takes about 2 s). With `given`
 * (a build the caller pointed at), only checks that `dist` holds one.
 */
export async function ensureApp(dist: string, workspace: string, given = false): Promise<void> {
  if (!given) await run("npm", ["run", "build", "-w", workspace], ROOT);
  else if (!existsSync(join(dist, "index.html"))) throw new Error(`${dist} holds no index.html`);
}

export function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = net.createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? done(address.port) : fail(new Error("no port"))));
    });
  });
}

/** Polls `check` until it returns a value other than undefined. */
export async function until<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP: a fresh connection per request (no keep-alive pool), so a request to a killed process
// fails at once with ECONNREFUSED instead of on a stale pooled socket.

export interface Reply {
  status: number;
  body: unknown;
}

export function request(
  base: string,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<Reply> {
  return new Promise((done, fail) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      `${base}${path}`,
      {
        method,
        agent: false,
        timeout: 2_000,
        headers: { ...headers, ...(payload === undefined ? {} : { "content-type": "application/json" }) },
      },
      (res) => {
        let text = "";
        res.on("data", (b: Buffer) => (text += b.toString()));
        res.on("end", () => {
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            // not JSON: keep the text
          }
          done({ status: res.statusCode ?? 0, body: parsed });
        });
        res.on("error", fail);
      },
    );
    req.once("timeout", () => req.destroy(Object.assign(new Error("request timed out"), { code: "ETIMEDOUT" })));
    req.once("error", fail);
    req.end(payload);
  });
}

/**
 * Debian's Chromium as this machine allows it: headless, no sandbox (root), and no background
 * networking (the closed network refuses it, many connections at a time).
 */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // launch() gives Chromium a fresh temporary --user-data-dir of its own and deletes it on close.
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--disable-quic",
    ],
    timeout: 30_000,
  });
}

export interface Opened {
  context: BrowserContext;
  page: Page;
  /** Page errors and console errors: a page that throws mostly just shows nothing. */
  problems: string[];
}

/** A fresh context (no cookies, cache or pooled sockets of an earlier page) and a page in it. */
export async function newPage(browser: Browser | undefined, viewport: { width: number; height: number }): Promise<Opened> {
  if (!browser) throw new Error("the browser did not start");
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console: ${m.text()}`);
  });
  return { context, page, problems };
}

/** For onTestFailed: what the page complained about, and the end of the server's log. */
export function report(problems: string[], server: { name: string; log: string } | undefined): void {
  console.error(`page problems:\n${problems.join("\n") || "(none)"}`);
  if (server) console.error(`${server.name} log (${server.log}):\n${readFileSync(server.log, "utf8").slice(-4000)}`);
}
