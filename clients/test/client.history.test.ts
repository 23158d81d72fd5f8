// client.history(): paging over GET /history, and its errors; createHistoryFeed over a real
// stream.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHistoryFeed } from "../src/history.js";
import { TidingsError } from "../src/index.js";
import { createClient, type Client } from "./generated/index.js";
import { KINDS, duplicates, makeClient, uniqueChannel, waitFor } from "./support/client.js";
import { sleep, startServer, type Server } from "./support/processes.js";

let server: Server;
let client: Client;
const channel = uniqueChannel("history");
const ids: string[] = [];

beforeAll(async () => {
  server = await startServer();
  client = createClient({ url: `${server.url}/`, transport: "fetch" }); // the trailing slash is dropped
  for (let i = 0; i < 12; i++) ids.push(await server.say(channel, `h${i}`));
  ids.push(await server.emit(channel, "notification.alert", "last"));
});
afterAll(async () => {
  client?.close();
  await server?.stop();
});

/** Emits `count` messages to `channel`, every `nth` one (from the first) by ada, the others by bob; returns ada's ids. */
async function sayEvery(channel: string, count: number, nth: number, prefix: string): Promise<string[]> {
  const adas: string[] = [];
  for (let i = 0; i < count; i++) {
    const user = i % nth === 0 ? "ada" : "bob";
    const id = await server.emit(channel, "chat.message", { user, text: `${prefix}${i}` });
    if (user === "ada") adas.push(id);
  }
  return adas;
}

async function expectError(promise: Promise<unknown>, status: number, code: string): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(TidingsError);
  expect((error as TidingsError).status).toBe(status);
  expect((error as TidingsError).code).toBe(code);
}

describe("history", () => {
  it("returns envelopes oldest first", async () => {
    const entries = await client.history(channel);
    expect(entries.map((e) => e.id)).toEqual(ids);
    expect(entries[0]).toEqual({ id: ids[0], channel, event: "chat.message", data: { text: "h0", user: "vitest" } });
    expect(entries.at(-1)).toEqual({ id: ids.at(-1), channel, event: "notification.alert", data: "last" });
    expect(client.status).toBe("disconnected"); // history does not open a stream
  });

  it("limit gives the newest entries", async () => {
    expect((await client.history(channel, { limit: 5 })).map((e) => e.id)).toEqual(ids.slice(-5));
    expect((await client.history(channel, { limit: 1 })).map((e) => e.id)).toEqual(ids.slice(-1));
  });

  it("after pages forward and before pages back, both exclusive", async () => {
    expect((await client.history(channel, { after: ids[3] as string, limit: 4 })).map((e) => e.id)).toEqual(ids.slice(4, 8));
    expect((await client.history(channel, { before: ids[8] as string, limit: 3 })).map((e) => e.id)).toEqual(ids.slice(5, 8));
    expect((await client.history(channel, { after: ids.at(-1) as string })).map((e) => e.id)).toEqual([]);
    expect((await client.history(channel, { before: ids[0] as string })).map((e) => e.id)).toEqual([]);
    // Paging forward through everything.
    const pages: string[] = [];
    let after = "0-0";
    for (;;) {
      const page = await client.history(channel, { after, limit: 5 });
      if (page.length === 0) break;
      pages.push(...page.map((e) => e.id));
      after = page.at(-1)?.id ?? after;
    }
    expect(pages).toEqual(ids);
  });

  it("events and filter are applied by the server, and limit counts what passes", async () => {
    const ch = uniqueChannel("hfilter");
    const adas = await sayEvery(ch, 30, 3, "t");
    await server.emit(ch, "chat.typing", { user: "ada", active: true });
    const newest = await client.history(ch, { events: ["chat.message"], filter: { user: "ada" }, limit: 4 });
    expect(newest.map((e) => e.id)).toEqual(adas.slice(-4));
    expect(newest.every((e) => e.data.user === "ada")).toBe(true);
    // Paging back by `next` reaches every match once, then null.
    const seen: string[] = [];
    let page = await client.historyPage(ch, { events: ["chat.message"], filter: { user: "ada" }, limit: 4 });
    for (;;) {
      seen.unshift(...page.entries.map((e) => e.id));
      if (page.next === null) break;
      page = await client.historyPage(ch, { events: ["chat.message"], filter: { user: "ada" }, limit: 4, before: page.next });
    }
    expect(seen).toEqual(adas);
    expect(page.reset).toBeNull();
    // `event` in a filter, without `events`.
    const typing = await client.history(ch, { filter: { event: "chat.typing" } });
    expect(typing.map((e) => e.event)).toEqual(["chat.typing"]);
    await expectError(client.history(ch, { events: ["chat.message"], filter: { active: true } as never }), 400, "invalid_filter");
  });

  it("an unknown channel is empty", async () => {
    expect(await client.history(uniqueChannel("empty"))).toEqual([]);
  });

  it("throws TidingsError with the server's code on a bad request", async () => {
    await expectError(client.history("bad channel"), 400, "invalid_channel");
    await expectError(client.history(channel, { limit: 0 }), 400, "invalid_limit");
    await expectError(client.history(channel, { after: "nope" }), 400, "invalid_id");
    await expectError(client.history(channel, { after: ids[0] as string, before: ids[1] as string }), 400, "invalid_query");
  });
});

describe.each(KINDS)("createHistoryFeed, %s transport", (kind) => {
  it("fetches history once, when ready, and misses nothing emitted around it", async () => {
    const ch = uniqueChannel("feed");
    const before: string[] = [];
    for (let i = 0; i < 3; i++) before.push(await server.say(ch, `before ${i}`));
    const { client: c } = makeClient(kind, server.url);
    let reads = 0;
    const read = c.history.bind(c);
    c.history = (channel, options) => {
      reads += 1;
      return read(channel, options);
    };
    const feed = createHistoryFeed(c, ch, { limit: 100 }, () => {});
    // Emit throughout: before the connection is ready, while history loads, and after.
    let running = true;
    const emitted = (async () => {
      const out: string[] = [];
      for (let i = 0; running && i < 200; i++) {
        out.push(await server.say(ch, `during ${i}`));
        await sleep(2);
      }
      return out;
    })();
    try {
      await waitFor(() => feed.status === "ready", "the feed loaded", 5000, () => String(feed.error));
      await sleep(50);
    } finally {
      running = false;
    }
    const during = await emitted;
    const all = [...before, ...during];
    await waitFor(() => feed.entries().length === all.length, "every event in the feed", 5000, () =>
      `${feed.entries().length} of ${all.length}`,
    );
    const got = feed.entries().map((e) => e.id);
    expect(duplicates(got)).toEqual([]);
    expect(got).toEqual(all);
    expect(reads).toBe(1);
    feed.close();
    c.close();
  });

  it("a filtered feed holds the newest `limit` that pass, and only those arrive live", async () => {
    const ch = uniqueChannel("ffeed");
    const adas = await sayEvery(ch, 20, 4, "old ");
    const { client: c } = makeClient(kind, server.url);
    const feed = createHistoryFeed(c, ch, { limit: 3, events: ["chat.message"], filter: { user: "ada" } }, () => {});
    await waitFor(() => feed.status === "ready", "the feed loaded", 5000, () => String(feed.error));
    expect(feed.entries().map((e) => e.id)).toEqual(adas.slice(-3));
    await server.emit(ch, "chat.message", { user: "bob", text: "live bob" });
    const live = await server.emit(ch, "chat.message", { user: "ada", text: "live ada" });
    await waitFor(() => feed.entries().at(-1)?.id === live, "ada's live message");
    expect(feed.entries().map((e) => e.id)).toEqual([...adas.slice(-2), live]);
    feed.close();
    c.close();
  });
});
