// The demo app in a real Chromium against real tidings processes on a real redis-server.
//
// A: the page connects and shows a chat message and an alert emitted server side.
// B: while numbered messages are emitted, the tidings process is SIGKILLed and a new one starts on
//    the same Redis and port; the page must end up showing every message exactly once, in order
//    (over EventSource, and over the WebSocket transport).
// C: a frozen connection is noticed and replaced.
// D: two pages in a room with presence (WebSocket) see each other arrive, and one leave.
//
// Needs /usr/bin/chromium (scripts/test installs it), redis-server and cargo, or TIDINGS_BIN (a
// prebuilt server binary, as for the unit suite: then cargo is not run). The app served is
// examples/chat/dist (built here with `npm run build -w examples/chat`);
// TIDINGS_E2E_APP_DIR points at another build. Run from clients/: npm run test:e2e
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it, onTestFailed, onTestFinished } from "vitest";
import { TcpProxy } from "../support/proxy.js";
import {
  ROOT,
  RESULTS,
  binaryPath,
  ensureApp,
  ensureBinary,
  freePort,
  kill,
  killAll,
  launchChromium,
  newPage,
  report,
  request as rawRequest,
  spawnLogged,
  track,
  until,
} from "./support.js";

const APP_DIR = process.env.TIDINGS_E2E_APP_DIR ?? join(ROOT, "examples/chat/dist");
const BINARY = binaryPath("TIDINGS_BIN", "tidings");
const EMIT_KEY = "e2e-emit-key";

let scratch = ""; // a temp dir for logs and Redis, made in beforeAll

function redisPing(port: number): Promise<boolean> {
  return new Promise((done) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.setTimeout(200);
    socket.once("connect", () => socket.write("PING\r\n"));
    socket.once("data", (b) => {
      done(b.toString().startsWith("+PONG"));
      socket.destroy();
    });
    for (const e of ["error", "timeout", "close"]) socket.once(e, () => (done(false), socket.destroy()));
  });
}

async function startRedis(): Promise<{ child: ChildProcess; url: string }> {
  const dir = mkdtempSync(join(scratch, "redis-"));
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const child = track(
      spawn(
        process.env.TIDINGS_REDIS_SERVER ?? "redis-server",
        ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir],
        { stdio: "ignore" },
      ),
    );
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && child.exitCode === null) {
      if (await redisPing(port)) return { child, url: `redis://127.0.0.1:${port}/` };
      await sleep(20);
    }
    await kill(child); // port taken between probe and bind: try another
  }
  throw new Error("redis-server did not start");
}

/** A request with the emit key (see `request` of ./support.ts). */
function request(base: string, method: string, path: string, body?: unknown) {
  return rawRequest(base, method, path, body, { authorization: `Bearer ${EMIT_KEY}` });
}

// ---------------------------------------------------------------------------------------------
// tidings processes on one fixed port, so the page's origin stays the same across a restart.

interface Node {
  child: ChildProcess;
  log: string;
}

/** tidings on `port`: on Redis at `redisUrl`, or on the embedded store when it is undefined. */
async function startTidings(redisUrl: string | undefined, port: number, extra: string[] = []): Promise<Node> {
  const base = `http://127.0.0.1:${port}`;
  let lastLog = "";
  // The old process's port may linger for a moment after SIGKILL: retry the same port.
  for (let attempt = 0; attempt < 5; attempt++) {
    const log = join(scratch, `tidings-${port}-${Date.now()}-${attempt}.log`);
    const child = await spawnLogged(
      BINARY,
      [
        ...(redisUrl === undefined ? [] : ["--redis", redisUrl]),
        "--app-dir", APP_DIR,
        "--bind", `127.0.0.1:${port}`,
        "--schema", join(ROOT, "schema/events.json"),
        ...extra,
      ],
      { TIDINGS_EMIT_KEY: EMIT_KEY, TIDINGS_LOG: "tidings=debug,warn" },
      log,
    );
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline && child.exitCode === null) {
      try {
        const r = await request(base, "GET", "/health");
        const body = r.body as { status?: string; store?: string };
        if (r.status === 200 && body.status === "ok" && body.store === (redisUrl ? "redis" : "memory")) return { child, log };
      } catch {
        // not listening yet
      }
      await sleep(25);
    }
    await kill(child);
    lastLog = readFileSync(log, "utf8");
    await sleep(200);
  }
  throw new Error(`tidings did not become ready on port ${port}:\n${lastLog}`);
}

// ---------------------------------------------------------------------------------------------
// The page, through the demo's DOM contract.

const STATUS = '[data-testid="status"]';
const MESSAGES = 'ul[data-testid="messages"] > li';
const ALERT = '[data-testid="alert"]';
const RESETS = '[data-testid="resets"]';

interface Item {
  id: string;
  text: string;
}

async function status(page: Page): Promise<string> {
  return ((await page.locator(STATUS).textContent()) ?? "").trim();
}

async function messages(page: Page): Promise<Item[]> {
  return page.$$eval(MESSAGES, (lis) =>
    lis.map((li) => ({ id: li.getAttribute("data-id") ?? "", text: (li.textContent ?? "").trim() })),
  );
}

/** Stream ids `ms-seq` compared as numbers. */
function idLess(a: string, b: string): boolean {
  const [am = "", as = ""] = a.split("-");
  const [bm = "", bs = ""] = b.split("-");
  const ams = BigInt(am);
  const bms = BigInt(bm);
  return ams < bms || (ams === bms && BigInt(as) < BigInt(bs));
}

// ---------------------------------------------------------------------------------------------

// Runs under vitest.e2e.config.ts only (the unit config excludes test/e2e): no guard that could
// turn the whole suite into "skipped" when an environment variable goes missing.
describe("the demo app in Chromium", () => {
  let redis: { child: ChildProcess; url: string };
  let port: number;
  let base: string;
  let node: Node | undefined;
  let browser: Browser | undefined;
  let context: BrowserContext | undefined;
  let page: Page | undefined;
  let shot = "";

  beforeAll(async () => {
    scratch = mkdtempSync(join(tmpdir(), "tidings-e2e-"));
    mkdirSync(RESULTS, { recursive: true });
    await ensureApp(APP_DIR, "examples/chat", process.env.TIDINGS_E2E_APP_DIR !== undefined);
    await ensureBinary("TIDINGS_BIN", BINARY, ["--bin", "tidings"]);
    redis = await startRedis();
    port = await freePort();
    base = `http://127.0.0.1:${port}`;
    node = await startTidings(redis.url, port);
    browser = await launchChromium();
  });

  afterEach(async () => {
    if (page && shot) await page.screenshot({ path: join(RESULTS, shot), fullPage: true }).catch(() => {});
    await context?.close().catch(() => {});
    context = undefined;
    page = undefined;
    shot = "";
  });

  afterAll(async () => {
    await Promise.race([browser?.close().catch(() => {}), sleep(10_000)]);
    await killAll();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  /** A new page on `path`, with page errors and console errors kept for a failure's report. */
  async function open(path: string, screenshot: string, at = base): Promise<Page> {
    const opened = await newPage(browser, { width: 900, height: 900 });
    context = opened.context;
    const p = opened.page;
    onTestFailed(() => report(opened.problems, node && { name: "tidings", log: node.log }));
    page = p;
    shot = screenshot;
    const response = await p.goto(`${at}${path}`);
    expect(response?.status(), "the app is served").toBe(200);
    await until("status connected", 15_000, async () => ((await status(p)) === "connected" ? true : undefined));
    return p;
  }

  async function emit(channel: string, event: string, data: unknown): Promise<string> {
    const r = await request(base, "POST", "/emit", { channel, event, data });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return (r.body as { id: string }).id;
  }

  it("shows a chat message and an alert emitted by the server", async () => {
    const p = await open("/app/", "browser-live.png");
    const id = await emit("room:1", "chat.message", { text: "hello from e2e", user: "ada" });
    await emit("alerts", "notification.alert", "deploy finished");

    const shown = await until("the message", 10_000, async () => {
      const items = await messages(p);
      return items.length > 0 ? items : undefined;
    });
    expect(shown).toEqual([{ id, text: "ada: hello from e2e" }]);
    await until("the alert", 10_000, async () =>
      ((await p.locator(ALERT).textContent()) ?? "").includes("deploy finished") ? true : undefined,
    );
    expect(((await p.locator(ALERT).textContent()) ?? "").trim()).toBe("deploy finished");
    expect(((await p.locator(RESETS).textContent()) ?? "").trim()).toBe("0");
    expect(await status(p)).toBe("connected");
  });

  it.each(["eventsource", "websocket"])("shows every message once, in order, across a SIGKILL and restart of tidings (%s)", async (transport) => {
    const room = `room:restart-${transport}`;
    // The demo lists the newest 100 messages (useHistory limit 100): all of them fit.
    const total = 100;
    const spacingMs = 60; // ~6 s of emits
    const killAfter = 35;
    const over = transport === "websocket" ? "&transport=websocket" : "";
    const p = await open(`/app/?room=${encodeURIComponent(room)}${over}`, `browser-restart-${transport}.png`);

    let emitted = 0;
    let ambiguous = 0; // emits whose fate the kill hid, settled by reading history
    const ids: string[] = [];
    let stopped = false; // when the test ends early, the emitter stops retrying
    onTestFinished(() => {
      stopped = true;
    });
    const retryLater = async () => {
      if (stopped) throw new Error("the test ended");
      await sleep(25);
    };

    /** Was `text` stored? Asks whichever process is up, waiting for one. */
    const storedId = async (text: string): Promise<string | undefined> => {
      for (;;) {
        try {
          const r = await request(base, "GET", `/history?channel=${encodeURIComponent(room)}&limit=20`);
          if (r.status === 200) {
            const entries = (r.body as { entries: { id: string; data: { text: string } }[] }).entries;
            return entries.find((e) => e.data.text === text)?.id;
          }
        } catch {
          // down: wait for the next process
        }
        await retryLater();
      }
    };

    // Emits n=0..total-1 in order through whichever process is up; an emit that fails is retried
    // until it is stored exactly once.
    const emitter = (async () => {
      for (let i = 0; i < total; i++) {
        const started = Date.now();
        const text = `n=${i}`;
        for (;;) {
          try {
            const r = await request(base, "POST", "/emit", {
              channel: room,
              event: "chat.message",
              data: { text, user: "e2e" },
            });
            if (r.status === 200) {
              ids.push((r.body as { id: string }).id);
              break;
            }
            // 503: the store did not answer, nothing was stored.
            if (r.status !== 503) throw new Error(`emit ${text}: ${r.status} ${JSON.stringify(r.body)}`);
          } catch (e) {
            const code = (e as { code?: string }).code;
            if (code !== "ECONNREFUSED") {
              if (!code || !["ECONNRESET", "EPIPE", "ETIMEDOUT"].includes(code)) throw e;
              // The process died with the request in flight: it may have been stored.
              ambiguous += 1;
              const id = await storedId(text);
              if (id !== undefined) {
                ids.push(id);
                break;
              }
            }
          }
          await retryLater();
        }
        emitted = i + 1;
        await sleep(Math.max(0, spacingMs - (Date.now() - started)));
      }
    })();
    emitter.catch(() => {}); // awaited below; this only keeps an early failure from going unhandled

    // Mid-stream: SIGKILL, ~1.5 s down while the page's status is polled, a new process on the
    // same Redis and port.
    await until(`${killAfter} emits`, 20_000, async () => (emitted >= killAfter ? true : undefined));
    if (!node) throw new Error("no tidings process");
    await kill(node.child);
    const killedAt = emitted;
    const seen: string[] = [];
    const note = async () => {
      const s = await status(p);
      if (seen[seen.length - 1] !== s) seen.push(s);
    };
    const downUntil = Date.now() + 1_500;
    while (Date.now() < downUntil) {
      await note();
      await sleep(50);
    }
    node = await startTidings(redis.url, port);
    const restartedAt = emitted;
    await until("status connected again", 15_000, async () => {
      await note();
      return seen[seen.length - 1] === "connected" ? true : undefined;
    });
    // Emitted through the new process before the page was back: these reach it by cursor replay.
    const replayed = emitted - restartedAt;
    await emitter;

    const expected = Array.from({ length: total }, (_, i) => `e2e: n=${i}`);
    // Wait for the last one; then compare whatever is shown, so a failure shows the difference.
    await until(`the last message`, 20_000, async () => {
      const items = await messages(p);
      return items[items.length - 1]?.text === expected[total - 1] ? true : undefined;
    }).catch(() => {});
    const shown = await messages(p);
    console.info(
      `restart test (${transport}): killed after ${killedAt} emits; statuses during the outage: ${seen.join(" → ")}; ` +
        `${ambiguous} emit(s) cut off by the kill; ~${replayed} emitted before the page reconnected`,
    );

    expect(seen.some((s) => s !== "connected"), `statuses seen: ${seen.join(", ")}`).toBe(true);
    expect(seen[seen.length - 1]).toBe("connected");
    expect(shown.map((m) => m.text)).toEqual(expected);
    expect(shown.map((m) => m.id)).toEqual(ids);
    // The list merges by id; the raw deliveries to the page's own handler must be once each too.
    const raw = await p.evaluate(
      () => (window as unknown as { tidingsDeliveries?: Record<string, number> }).tidingsDeliveries ?? {},
    );
    expect(Object.keys(raw).sort()).toEqual([...ids].sort());
    expect(Object.entries(raw).filter(([, n]) => n !== 1), "ids handed to onData more than once").toEqual([]);
    for (let i = 1; i < shown.length; i++) {
      const [prev, cur] = [shown[i - 1], shown[i]];
      expect(prev && cur && idLess(prev.id, cur.id), `ids increase at ${i}: ${prev?.id} then ${cur?.id}`).toBe(
        true,
      );
    }
    expect(((await p.locator(RESETS).textContent()) ?? "").trim()).toBe("0");
    expect(await status(p)).toBe("connected");
  });

  it("notices a frozen connection within 8 s, reconnects, and shows what was emitted meanwhile once, in order", async () => {
    // Its own tidings with 2 s heartbeats, reached through a proxy that can freeze every open
    // connection: no bytes forwarded from the server, nothing closed (a NAT that forgot the flow).
    const direct = await freePort();
    const frozenNode = await startTidings(undefined, direct, ["--heartbeat", "2"]);
    const proxy = await TcpProxy.start(direct);
    onTestFinished(async () => {
      await proxy.close();
      await kill(frozenNode.child);
    });
    const room = "room:frozen";
    const at = `http://127.0.0.1:${direct}`;
    const say = async (text: string) => {
      const r = await request(at, "POST", "/emit", { channel: room, event: "chat.message", data: { text, user: "e2e" } });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      return (r.body as { id: string }).id;
    };

    const p = await open(`/app/?room=${encodeURIComponent(room)}`, "browser-frozen.png", proxy.url);
    // Every status the page shows, as it changes (polling could miss a short "connecting").
    await p.evaluate(() => {
      const el = document.querySelector('[data-testid="status"]');
      const seen: string[] = [(el?.textContent ?? "").trim()];
      (window as unknown as { statuses: string[] }).statuses = seen;
      if (el)
        new MutationObserver(() => {
          const now = (el.textContent ?? "").trim();
          if (seen[seen.length - 1] !== now) seen.push(now);
        }).observe(el, { childList: true, subtree: true, characterData: true });
    });
    const statuses = () => p.evaluate(() => (window as unknown as { statuses: string[] }).statuses);

    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push(await say(`before ${i}`));
    await until("3 messages", 10_000, async () => ((await messages(p)).length === 3 ? true : undefined));

    expect(proxy.freezeAll()).toBeGreaterThan(0);
    const frozenAt = Date.now();
    for (let i = 0; i < 5; i++) ids.push(await say(`during ${i}`));
    await until("the page noticed", 8_000, async () => ((await statuses()).includes("connecting") ? true : undefined));
    const noticed = Date.now() - frozenAt;
    await until("8 messages", 10_000, async () => ((await messages(p)).length === 8 ? true : undefined));
    await until("connected again", 10_000, async () => ((await status(p)) === "connected" ? true : undefined));

    const seen = await statuses();
    console.info(`frozen-link test: noticed after ${noticed} ms; statuses ${seen.join(" → ")}`);
    expect(noticed).toBeLessThan(8_000);
    expect(seen[0]).toBe("connected");
    expect(seen).toContain("connecting");
    expect(seen[seen.length - 1]).toBe("connected");
    const shown = await messages(p);
    expect(shown.map((m) => m.text)).toEqual([
      ...[0, 1, 2].map((i) => `e2e: before ${i}`),
      ...[0, 1, 2, 3, 4].map((i) => `e2e: during ${i}`),
    ]);
    expect(shown.map((m) => m.id)).toEqual(ids);
  });

  it("two pages in a room with presence see each other arrive and leave (WebSocket)", async () => {
    const direct = await freePort();
    const presenceNode = await startTidings(undefined, direct, ["--presence", "room:*"]);
    onTestFinished(async () => {
      await kill(presenceNode.child);
    });
    const at = `http://127.0.0.1:${direct}`;
    const room = "room:presence";
    const present = (p: Page) =>
      p.$$eval('[data-testid="present"] > li', (lis) => lis.map((li) => (li.textContent ?? "").trim()).sort());
    const openAs = async (user: string) => {
      const opened = await newPage(browser, { width: 700, height: 500 });
      onTestFailed(() => report(opened.problems, { name: "tidings", log: presenceNode.log }));
      onTestFinished(async () => {
        await opened.context.close().catch(() => {});
      });
      const r = await opened.page.goto(`${at}/app/?room=${room}&transport=websocket&user=${user}`);
      expect(r?.status()).toBe(200);
      await until(`${user} connected`, 15_000, async () => ((await status(opened.page)) === "connected" ? true : undefined));
      return opened;
    };
    const ada = await openAs("ada");
    await until("ada sees herself", 10_000, async () => ((await present(ada.page)).join() === "ada" ? true : undefined));
    const bob = await openAs("bob");
    for (const [who, p] of [["ada", ada.page], ["bob", bob.page]] as const) {
      await until(`${who} sees both`, 10_000, async () => ((await present(p)).join() === "ada,bob" ? true : undefined));
    }
    await ada.page.screenshot({ path: join(RESULTS, "browser-presence-ada.png"), fullPage: true });
    await bob.page.screenshot({ path: join(RESULTS, "browser-presence-bob.png"), fullPage: true });
    // Bob closes his tab: Ada sees him go.
    await bob.context.close();
    await until("ada sees bob leave", 10_000, async () => ((await present(ada.page)).join() === "ada" ? true : undefined));
    await ada.page.screenshot({ path: join(RESULTS, "browser-presence-after-leave.png"), fullPage: true });
    expect(await present(ada.page)).toEqual(["ada"]);
  });
});
