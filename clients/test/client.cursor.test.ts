// Cursor handling and de-duplication against a real server behind a proxy that drops connections.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { parseCursor, type Frame } from "../src/index.js";
import type { Client } from "./generated/index.js";
import { Collector, KINDS, cursorOf, duplicates, makeClient, uniqueChannel, waitFor } from "./support/client.js";
import { startServer, sleep, type Server } from "./support/processes.js";
import { TcpProxy } from "./support/proxy.js";

let server: Server;
let proxy: TcpProxy;
const clients: Client[] = [];

beforeAll(async () => {
  server = await startServer();
  proxy = await TcpProxy.start(server.port);
});
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
  proxy.refuse(false);
});
afterAll(async () => {
  await proxy?.close();
  await server?.stop();
});

function threeChannels(prefix: string): [string, string, string] {
  const base = uniqueChannel(prefix);
  return [`${base}-a`, `${base}-b`, `${base}-c`];
}

/** Checks, per channel, that the ids delivered are exactly the server's history, in order. */
async function expectExactlyHistory(col: Collector, channels: readonly string[]): Promise<void> {
  for (const channel of channels) {
    const ids = col.ids(channel);
    expect(duplicates(ids), `duplicates on ${channel}`).toEqual([]);
    const history = (await server.history(channel)).map((e) => e.id);
    expect(ids, `deliveries on ${channel}`).toEqual(history);
  }
}

describe.each(KINDS)("%s transport", (kind) => {
  function client(extra = {}) {
    const made = makeClient(kind, proxy.url, extra);
    clients.push(made.client);
    return made;
  }

  it("cursor() holds every channel's last delivered id, with its epoch", async () => {
    const chans = threeChannels("cur");
    const { client: c } = client();
    const col = new Collector(c, chans);
    await waitFor(() => c.status === "connected", "connected");
    // tidings.ready gives a position for every channel, even before any event.
    expect([...parseCursor(c.cursor()).keys()]).toEqual(chans);
    const last = new Map<string, string>();
    for (let i = 0; i < 9; i++) {
      const ch = chans[i % 3] as string;
      last.set(ch, await server.say(ch, `m${i}`));
    }
    await waitFor(() => col.count() === 9, "9 events", 5000, () => String(col.count()));
    const positions = parseCursor(c.cursor());
    expect([...positions.keys()]).toEqual(chans);
    for (const ch of chans) {
      // The server's position for the id: the epoch travels with it, so a resume can tell a
      // history that was lost and started again.
      expect(positions.get(ch)).toMatch(new RegExp(`^${last.get(ch)}@[0-9a-f]{8}$`));
    }
    const texts = (ch: string) =>
      col.envelopes.filter((e) => e.channel === ch).map((e) => (e.event === "chat.message" ? e.data.text : "?"));
    expect(texts(chans[0])).toEqual(["m0", "m3", "m6"]);
    expect(texts(chans[1])).toEqual(["m1", "m4", "m7"]);
    expect(texts(chans[2])).toEqual(["m2", "m5", "m8"]);
  });

  it("resumes after a drop: events emitted meanwhile arrive exactly once, in order", async () => {
    const chans = threeChannels("resume");
    const { client: c, rec } = client();
    const col = new Collector(c, chans);
    await waitFor(() => c.status === "connected", "connected");
    for (let i = 0; i < 6; i++) await server.say(chans[i % 3] as string, `before ${i}`);
    await waitFor(() => col.count() === 6, "6 events before the drop");

    proxy.refuse(true);
    expect(proxy.dropAll()).toBeGreaterThanOrEqual(1);
    await waitFor(() => c.status === "error", "error status after the drop");
    const cursorAtDrop = c.cursor();
    const connectionsAtDrop = rec.connections;
    for (let i = 0; i < 30; i++) await server.say(chans[i % 3] as string, `during ${i}`);
    await sleep(150);
    expect(col.count()).toBe(6);
    expect(rec.connections).toBeGreaterThan(connectionsAtDrop); // it kept trying

    proxy.refuse(false);
    await waitFor(() => col.count() >= 36, "36 events after the reconnect", 5000, () => String(col.count()));
    await sleep(100);
    expect(col.count()).toBe(36);
    await expectExactlyHistory(col, chans);
    expect(c.status).toBe("connected");
    // Every reconnect asked for exactly what the client had seen.
    for (const url of rec.urls.slice(connectionsAtDrop)) expect(cursorOf(url)).toBe(cursorAtDrop);
    expect(parseCursor(cursorAtDrop).size).toBe(3);
  });

  it("repeated drops during a continuous stream lose and repeat nothing", async () => {
    const chans = threeChannels("storm");
    const { client: c, rec } = client();
    const col = new Collector(c, chans);
    await waitFor(() => c.status === "connected", "connected");
    let emitting = true;
    let emitted = 0;
    const emitter = (async () => {
      while (emitting) {
        await server.say(chans[emitted % 3] as string, `n${emitted}`);
        emitted += 1;
        await sleep(2);
      }
    })();
    for (let drop = 0; drop < 4; drop++) {
      await sleep(200);
      await waitFor(() => c.status === "connected", `connected before drop ${drop}`);
      proxy.dropAll();
    }
    await sleep(200);
    emitting = false;
    await emitter;
    await waitFor(() => col.count() >= emitted, `${emitted} events`, 5000, () => String(col.count()));
    await sleep(100);
    expect(rec.connections).toBeGreaterThanOrEqual(5);
    expect(emitted).toBeGreaterThan(30);
    expect(col.count()).toBe(emitted);
    await expectExactlyHistory(col, chans);
  });

  it("two subscriptions sharing a channel each get every event once, on one connection", async () => {
    const [a, b] = threeChannels("share");
    const { client: c, rec } = client();
    const both = new Collector(c, [a, b]);
    const onlyA = new Collector(c, [a]);
    const typing: string[] = [];
    c.subscribe({ channels: [a], events: ["chat.typing"], onData: (e) => typing.push(e.id) });
    await waitFor(() => c.status === "connected", "connected");
    const ids = [
      await server.say(a, "1"),
      await server.say(b, "2"),
      await server.emit(a, "chat.typing", { user: "ann", active: true }),
      await server.say(a, "3"),
    ];
    await waitFor(() => both.count() === 4 && onlyA.count() === 3 && typing.length === 1, "all deliveries");
    await sleep(50);
    // Order is kept per channel (the server does not order live events across channels).
    expect(both.ids(a)).toEqual([ids[0], ids[2], ids[3]]);
    expect(both.ids(b)).toEqual([ids[1]]);
    expect(onlyA.envelopes.map((e) => e.id)).toEqual([ids[0], ids[2], ids[3]]);
    expect(typing).toEqual([ids[2]]);
    expect(rec.connections).toBe(1);
    expect(new URL(rec.lastUrl).searchParams.get("events")).toBeNull(); // one sub wants everything
    // Dropping one of two subscriptions of the same channels keeps the connection.
    onlyA.unsubscribe();
    await sleep(50);
    expect(rec.connections).toBe(1);
    await server.say(a, "4");
    await waitFor(() => both.count() === 5, "5th event");
    expect(onlyA.count()).toBe(3);
  });

  it("drops events a reconnect with an older cursor replays", async () => {
    const [a] = threeChannels("replay");
    const { client: c, rec } = client();
    const col = new Collector(c, [a]);
    await waitFor(() => c.status === "connected", "connected");
    await server.say(a, "1");
    await server.say(a, "2");
    await waitFor(() => col.count() === 2, "2 events");
    const older = c.cursor();
    for (let i = 3; i <= 5; i++) await server.say(a, String(i));
    await waitFor(() => col.count() === 5, "5 events");
    expect(c.cursor()).not.toBe(older);

    // The next connection asks for an older cursor than the client holds.
    rec.rewriteNext = (url) => {
      const u = new URL(url);
      u.searchParams.set("cursor", older);
      return u.toString();
    };
    proxy.dropAll();
    await waitFor(() => rec.connections === 2 && c.status === "connected", "reconnected");
    await server.say(a, "6");
    await server.say(a, "7");
    await waitFor(() => col.count() >= 7, "7 events", 5000, () => String(col.count()));
    await sleep(100);
    expect(cursorOf(rec.urls[1] ?? "")).toBe(older);
    const eventsOnSecond = (rec.frames[1] ?? []).filter((f) => !f.event.startsWith("tidings."));
    expect(eventsOnSecond).toHaveLength(5); // 3 replayed duplicates + 2 new
    expect(col.envelopes.map((e) => (e.event === "chat.message" ? e.data.text : "?"))).toEqual(["1", "2", "3", "4", "5", "6", "7"]);
    await expectExactlyHistory(col, [a]);
  });

  it("drops a frame the transport delivers twice or late", async () => {
    const [a, b] = threeChannels("twice");
    const { client: c, rec } = client();
    const col = new Collector(c, [a, b]);
    let previous: Frame | undefined;
    rec.tamper = (frame) => {
      if (frame.event.startsWith("tidings.")) return [frame];
      const out = previous ? [frame, frame, previous] : [frame, frame];
      previous = frame;
      return out;
    };
    await waitFor(() => c.status === "connected", "connected");
    for (let i = 0; i < 6; i++) await server.say(i % 2 ? b : a, String(i));
    await waitFor(() => col.count() >= 6, "6 events");
    await sleep(100);
    expect(col.count()).toBe(6);
    await expectExactlyHistory(col, [a, b]);
  });
});
