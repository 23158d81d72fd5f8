// The orders example in a real Chromium against its real Rust server: an app's own schema, typed
// events emitted from Rust by the app's own API, shown by a page built on the hooks generated
// from that schema. The page must be live (onReady) before anything is emitted, then show each
// order once, with its status changes in order.
//
// Needs /usr/bin/chromium and cargo, or ORDERS_BIN (a prebuilt `orders` binary of
// examples/orders: then cargo is not run). The page is examples/orders/web/dist, built here with
// `npm run build -w examples/orders/web` when missing. Run from clients/: npm run test:e2e
import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from "vitest";
import { ROOT, RESULTS, TARGET_DIR, freePort, killAll, launchChromium, request, run, track, until } from "./support.js";

const WEB = join(ROOT, "examples/orders/web/dist");
const BINARY = process.env.ORDERS_BIN || join(TARGET_DIR, "debug/orders");

describe.skipIf(!process.env.TIDINGS_E2E)("the orders example in Chromium", () => {
  let scratch = "";
  let shop: { child: ChildProcess; log: string; base: string } | undefined;
  let browser: Browser | undefined;

  beforeAll(async () => {
    scratch = mkdtempSync(join(tmpdir(), "tidings-orders-"));
    mkdirSync(RESULTS, { recursive: true });
    if (!existsSync(join(WEB, "index.html"))) await run("npm", ["run", "build", "-w", "examples/orders/web"], ROOT);
    if (process.env.ORDERS_BIN) {
      if (!existsSync(BINARY)) throw new Error(`ORDERS_BIN=${BINARY} does not exist`);
    } else {
      await run("cargo", ["build", "-p", "orders-example"], ROOT);
    }
    const port = await freePort();
    const log = join(scratch, "orders.log");
    const out = createWriteStream(log);
    await new Promise((done) => out.once("open", done));
    const child = track(
      spawn(BINARY, ["--bind", `127.0.0.1:${port}`, "--web", WEB, "--step-ms", "300"], {
        // Nothing of the caller's environment (REDIS_URL) leaks in: the embedded store.
        env: { PATH: process.env.PATH ?? "" },
        stdio: ["ignore", out, out],
      }),
    );
    const base = `http://127.0.0.1:${port}`;
    await until("the shop to serve", 15_000, async () => {
      if (child.exitCode !== null) throw new Error(`the shop exited:\n${readFileSync(log, "utf8")}`);
      const r = await request(base, "GET", "/rt/health").catch(() => undefined);
      return r?.status === 200 ? true : undefined;
    });
    shop = { child, log, base };
    browser = await launchChromium();
  });

  afterAll(async () => {
    await browser?.close().catch(() => {});
    await killAll();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  const log = (p: Page) => p.$$eval('ol[data-testid="log"] > li', (lis) => lis.map((li) => (li.textContent ?? "").trim()));
  const text = async (p: Page, selector: string) => ((await p.locator(selector).first().textContent()) ?? "").trim();

  it("is live before the first emit, and shows typed orders from Rust once, in order", async () => {
    if (!browser || !shop) throw new Error("set-up failed");
    const context = await browser.newContext({ viewport: { width: 900, height: 700 } });
    const p = await context.newPage();
    const problems: string[] = [];
    p.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
    p.on("console", (m) => {
      if (m.type() === "error") problems.push(`console: ${m.text()}`);
    });
    onTestFailed(() => {
      console.error(`page problems:\n${problems.join("\n") || "(none)"}`);
      if (shop) console.error(`shop log:\n${readFileSync(shop.log, "utf8").slice(-4000)}`);
    });
    try {
      expect((await p.goto(`${shop.base}/`))?.status()).toBe(200);
      await until("live", 15_000, async () => ((await text(p, '[data-testid="ready"]')) === "live" ? true : undefined));
      expect(await text(p, '[data-testid="status"]')).toBe("connected");
      // Nothing was emitted yet: onReady came first, with no order shown.
      expect(await log(p)).toEqual(["ready"]);
      expect(await p.locator('ul[data-testid="orders"] > li').count()).toBe(0);

      // The page's own form posts to the app's API; Rust emits the typed order.placed.
      await p.getByRole("button", { name: "Place order" }).click();
      const first = p.locator('li[data-order="1"]');
      await until("order #1", 10_000, async () => ((await first.count()) === 1 ? true : undefined));
      expect(((await first.textContent()) ?? "").replace(/\s+/g, " ")).toContain("#1 ada: 1 × mug-1 · 12.50 €");
      await until("order #1 shipped", 10_000, async () =>
        ((await first.locator(".state").textContent()) ?? "") === "shipped" ? true : undefined,
      );
      expect(((await first.locator(".carrier").textContent()) ?? "").trim()).toBe("via Parcel Co.");

      // An order placed outside the page reaches it too.
      const placed = await request(shop.base, "POST", "/api/orders", { customer: "grace", sku: "mug-1", qty: 16 });
      expect(placed.status, JSON.stringify(placed.body)).toBe(200);
      expect((placed.body as { id: number }).id).toBe(2);
      const second = p.locator('li[data-order="2"]');
      await until("order #2 shipped", 10_000, async () =>
        (await second.count()) === 1 && ((await second.locator(".state").textContent()) ?? "") === "shipped"
          ? true
          : undefined,
      );
      // 20 in stock, 1 + 16 sold: 3 left, under the threshold of 5.
      await until("the low-stock banner", 10_000, async () =>
        (await text(p, '[data-testid="stock"]')).includes("mug-1: 3 left") ? true : undefined,
      );

      const lines = await log(p);
      expect(lines[0]).toBe("ready");
      for (const id of [1, 2]) {
        const mine = lines.filter((l) => l.endsWith(`#${id} packed`) || l.endsWith(`#${id} shipped`));
        expect(mine, `status lines of #${id}`).toEqual([`order.status #${id} packed`, `order.status #${id} shipped`]);
      }
      const placedAt = lines.indexOf("placed #1");
      expect(placedAt).toBeGreaterThan(0);
      expect(lines.indexOf("order.status #1 packed")).toBeGreaterThan(0);
      expect(await p.locator('li[data-order="1"]').count()).toBe(1);
      expect(await p.locator('li[data-order="2"]').count()).toBe(1);
      expect(problems).toEqual([]);
    } finally {
      await p.screenshot({ path: join(RESULTS, "orders.png"), fullPage: true }).catch(() => {});
      await context.close();
    }
  });
});
