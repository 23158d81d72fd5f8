// The orders example in a real Chromium against its real Rust server: an app's own schema, typed
// events emitted from Rust by the app's own API, shown by a page built on the hooks generated
// from that schema. The page must be live (onReady) before anything is emitted, then show each
// order once, with its status changes in order.
//
// Needs /usr/bin/chromium and cargo, or ORDERS_BIN (a prebuilt `orders` binary of
// examples/orders: then cargo is not run). The page is examples/orders/web/dist, built here with
// `npm run build -w examples/orders/web`. The shop runs on the embedded store: what
// is under test is the page and the typed emits, which the store does not change.
// Run from clients/: npm run test:e2e
import type { ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from "vitest";
import {
  ROOT,
  RESULTS,
  binaryPath,
  ensureApp,
  ensureBinary,
  freePort,
  killAll,
  launchChromium,
  newPage,
  report,
  request,
  spawnLogged,
  until,
} from "./support.js";

const WEB = join(ROOT, "examples/orders/web/dist");
const BINARY = binaryPath("ORDERS_BIN", "orders");
// The shop's stock of every sku when it starts, and the level under which it emits stock.low.
const STOCK = 20;
const LOW = 5;

// ---------------------------------------------------------------------------------------------
// The page, through its DOM contract (examples/orders/web/src/App.tsx).

const text = async (p: Page, selector: string) => ((await p.locator(selector).first().textContent()) ?? "").trim();
const log = (p: Page) => p.$$eval('ol[data-testid="log"] > li', (lis) => lis.map((li) => (li.textContent ?? "").trim()));
const order = (p: Page, id: number) => p.locator(`ul[data-testid="orders"] > li[data-order="${id}"]`);
const state = async (p: Page, id: number) => ((await order(p, id).locator(".state").textContent()) ?? "").trim();

/**
 * Records every state each order shows, as it changes: polling could miss `packed`, which lasts
 * only --step-ms. Installed before the order exists, so it watches the whole list.
 */
async function recordStates(p: Page): Promise<() => Promise<Record<string, string[]>>> {
  await p.evaluate(() => {
    const list = document.querySelector('ul[data-testid="orders"]');
    const seen: Record<string, string[]> = {};
    (window as unknown as { states: typeof seen }).states = seen;
    const look = () => {
      for (const li of Array.from(list?.querySelectorAll("li[data-order]") ?? [])) {
        const id = li.getAttribute("data-order") ?? "";
        const now = (li.querySelector(".state")?.textContent ?? "").trim();
        const mine = (seen[id] ??= []);
        if (mine[mine.length - 1] !== now) mine.push(now);
      }
    };
    if (list) new MutationObserver(look).observe(list, { childList: true, subtree: true, characterData: true });
  });
  return () => p.evaluate(() => (window as unknown as { states: Record<string, string[]> }).states);
}

// Runs under vitest.e2e.config.ts only (the unit config excludes test/e2e): no guard that could
// turn the whole suite into "skipped" when an environment variable goes missing.
describe("the orders example in Chromium", () => {
  let scratch = "";
  let shop: { child: ChildProcess; log: string; base: string } | undefined;
  let browser: Browser | undefined;

  beforeAll(async () => {
    scratch = mkdtempSync(join(tmpdir(), "tidings-orders-"));
    mkdirSync(RESULTS, { recursive: true });
    await ensureApp(WEB, "examples/orders/web");
    await ensureBinary("ORDERS_BIN", BINARY, ["-p", "orders-example"]);
    const port = await freePort();
    const log = join(scratch, "orders.log");
    // No REDIS_URL: the embedded store, and a fresh shop (stock, order ids from 1) every run.
    const child = await spawnLogged(BINARY, ["--bind", `127.0.0.1:${port}`, "--web", WEB, "--step-ms", "300"], {}, log);
    const base = `http://127.0.0.1:${port}`;
    await until("the shop to serve", 15_000, async () => {
      if (child.exitCode !== null) throw new Error(`the shop exited:\n${readFileSync(log, "utf8")}`);
      const r = await request(base, "GET", "/rt/health").catch(() => undefined);
      return r?.status === 200 && (r.body as { store?: string }).store === "memory" ? true : undefined;
    });
    shop = { child, log, base };
    browser = await launchChromium();
  });

  afterAll(async () => {
    await browser?.close().catch(() => {});
    await killAll();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  it("is live before the first emit, and shows typed orders from Rust once, in order", async () => {
    if (!shop) throw new Error("the shop did not start");
    const { context, page: p, problems } = await newPage(browser, { width: 900, height: 700 });
    onTestFailed(() => report(problems, shop && { name: "orders", log: shop.log }));
    try {
      expect((await p.goto(`${shop.base}/`))?.status(), "the page is served").toBe(200);
      await until("live", 15_000, async () => ((await text(p, '[data-testid="ready"]')) === "live" ? true : undefined));
      expect(await text(p, '[data-testid="status"]')).toBe("connected");
      // Nothing was emitted yet: onReady came first, with no order shown. An order placed from
      // here on cannot be missed.
      expect(await log(p)).toEqual(["ready"]);
      expect(await p.locator('ul[data-testid="orders"] > li').count()).toBe(0);
      const states = await recordStates(p);

      // The page's own form posts to the app's API; Rust emits the typed order.placed. Not the
      // form's defaults (ada, 1), so the text shown is what was typed.
      const sold = [2, 16];
      await p.getByLabel("customer").fill("linus");
      await p.getByLabel("sku").fill("mug-1");
      await p.getByLabel("qty").fill(String(sold[0]));
      await p.getByRole("button", { name: "Place order" }).click();
      await until("order #1 shipped", 10_000, async () => ((await state(p, 1)) === "shipped" ? true : undefined));
      expect(((await order(p, 1).textContent()) ?? "").replace(/\s+/g, " ").trim()).toBe(
        "#1 linus: 2 × mug-1 · 25.00 € · shipped via Parcel Co.",
      );
      expect(await text(p, 'li[data-order="1"] .carrier')).toBe("via Parcel Co.");
      expect((await states())["1"]?.filter((s) => s !== "paid"), "the states order #1 showed").toEqual([
        "packed",
        "shipped",
      ]);
      // 18 left: above the threshold, so no banner yet.
      expect(await p.locator('[data-testid="stock"]').count()).toBe(0);

      // An order placed outside the page (from here, through the app's API) reaches it by the
      // stream alone; it takes the stock under the threshold.
      const placed = await request(shop.base, "POST", "/api/orders", { customer: "grace", sku: "mug-1", qty: sold[1] });
      expect(placed.status, JSON.stringify(placed.body)).toBe(200);
      expect((placed.body as { id: number }).id).toBe(2);
      await until("order #2 shipped", 10_000, async () => ((await state(p, 2)) === "shipped" ? true : undefined));
      expect(((await order(p, 2).textContent()) ?? "").replace(/\s+/g, " ").trim()).toBe(
        "#2 grace: 16 × mug-1 · 200.00 € · shipped via Parcel Co.",
      );
      const left = STOCK - sold.reduce((a, b) => a + b, 0);
      expect(left).toBeLessThan(LOW);
      await until("the low-stock banner", 10_000, async () =>
        (await p.locator('[data-testid="stock"]').count()) === 1 ? true : undefined,
      );
      expect(await text(p, '[data-testid="stock"]')).toBe(`Low stock: mug-1: ${left} left`);

      // Exactly once: one list item per order, each timeline line once. The page logs "placed"
      // only for what it posted itself, so #2 has none.
      expect(await order(p, 1).count()).toBe(1);
      expect(await order(p, 2).count()).toBe(1);
      expect(await p.locator('ul[data-testid="orders"] > li').count()).toBe(2);
      const lines = await log(p);
      expect(lines[0], "onReady before anything else").toBe("ready");
      expect([...lines].sort()).toEqual(
        [
          "ready",
          "placed #1",
          "order.status #1 packed",
          "order.status #1 shipped",
          "order.status #2 packed",
          "order.status #2 shipped",
        ].sort(),
      );
      // The status changes of an order arrive in the order Rust emitted them. ("placed #1" is
      // logged when the page's POST returns, not by the stream, so it has no place among them.)
      for (const id of [1, 2]) {
        expect(lines.filter((l) => l.startsWith(`order.status #${id} `)), `status lines of #${id}`).toEqual([
          `order.status #${id} packed`,
          `order.status #${id} shipped`,
        ]);
      }
      expect((await states())["2"]?.filter((s) => s !== "paid"), "the states order #2 showed").toEqual([
        "packed",
        "shipped",
      ]);
      expect(problems).toEqual([]);
    } finally {
      await p.screenshot({ path: join(RESULTS, "orders.png"), fullPage: true }).catch(() => {});
      await context.close();
    }
  });
});
