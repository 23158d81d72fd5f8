// Changing the channel set while events flow: one reconnect with the current cursor.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { compareIds, parseCursor } from "../src/index.js";
import type { Client } from "./generated/index.js";
import { Collector, KINDS, channelsOf, cursorOf, makeClient, uniqueChannel, waitFor } from "./support/client.js";
import { startServer, sleep, type Server } from "./support/processes.js";

let server: Server;
const clients: Client[] = [];

beforeAll(async () => {
  server = await startServer();
});
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});
afterAll(async () => {
  await server?.stop();
});

/** Emits round-robin to `channels` until stopped; remembers the last id per channel. */
function startEmitter(channels: readonly string[]) {
  const last = new Map<string, string>();
  let running = true;
  let n = 0;
  const done = (async () => {
    while (running) {
      const ch = channels[n % channels.length] as string;
      last.set(ch, await server.say(ch, `n${n}`));
      n += 1;
      await sleep(3);
    }
  })();
  return {
    last,
    async stop() {
      running = false;
      await done;
    },
  };
}

describe.each(KINDS)("%s transport", (kind) => {
  it("switching B for C keeps A gapless, starts C live and stops B", async () => {
    const base = uniqueChannel("switch");
    const [A, B, C] = [`${base}-a`, `${base}-b`, `${base}-c`];
    const { client: c, rec } = makeClient(kind, server.url);
    clients.push(c);
    const colA = new Collector(c, [A]);
    const colB = new Collector(c, [B]);
    let colC: Collector | undefined;
    await waitFor(() => c.status === "connected", "connected");
    const emitter = startEmitter([A, B, C]);
    let cBefore: string | undefined;
    let bAtSwitch = 0;
    try {
      await waitFor(() => colA.count() >= 5 && colB.count() >= 5, "A and B flowing");
      expect(rec.connections).toBe(1);

      // Unmount B and mount C in the same tick, mid-stream.
      cBefore = emitter.last.get(C);
      const aAtSwitch = colA.count();
      colB.unsubscribe();
      bAtSwitch = colB.count();
      const cc = new Collector(c, [C]);
      colC = cc;
      await waitFor(() => cc.count() >= 5 && colA.count() >= aAtSwitch + 10, "A and C flowing after the switch");
    } finally {
      await emitter.stop();
    }
    const historyA = (await server.history(A)).map((e) => e.id);
    const historyC = (await server.history(C)).map((e) => e.id);
    await waitFor(
      () => colA.count() >= historyA.length && colC?.ids(C).at(-1) === historyC.at(-1),
      "A and C caught up",
      5000,
      () => `A ${colA.count()}/${historyA.length}`,
    );
    await sleep(50);

    expect(rec.connections).toBe(2);
    const second = rec.urls[1] ?? "";
    expect(channelsOf(second)).toEqual([A, C]);
    expect([...parseCursor(cursorOf(second)).keys()]).toEqual([A]); // A resumes, C starts live, B is forgotten
    // Every stored A event arrived once, in order: no gap and no repeat across the switch.
    expect(colA.ids(A)).toEqual(historyA);
    // C starts live (nothing from before the switch) and has no gap after its start.
    const idsC = colC?.ids(C) ?? [];
    expect(cBefore).toBeDefined();
    expect(idsC.every((id) => compareIds(id, cBefore ?? "0-0") > 0)).toBe(true);
    expect(idsC).toEqual(historyC.slice(historyC.indexOf(idsC[0] ?? "")));
    // B stops.
    expect(colB.count()).toBe(bAtSwitch);
  });

  it("unsubscribe and subscribe in the same tick does not reconnect", async () => {
    const ch = uniqueChannel("remount");
    const { client: c, rec, statuses } = makeClient(kind, server.url);
    clients.push(c);
    const first = new Collector(c, [ch]);
    await waitFor(() => c.status === "connected", "connected");
    await server.say(ch, "1");
    await waitFor(() => first.count() === 1, "first event");
    const statusesBefore = statuses.length;

    first.unsubscribe();
    const second = new Collector(c, [ch]); // React strict mode / a remount
    await sleep(100);
    expect(rec.connections).toBe(1);
    expect(rec.closes).toBe(0);
    expect(statuses.length).toBe(statusesBefore);
    const id = await server.say(ch, "2");
    await waitFor(() => second.count() === 1, "event on the remounted subscription");
    expect(second.ids(ch)).toEqual([id]);
    expect(first.count()).toBe(1);
  });

  it("a channel subscribed again later starts live instead of replaying what it missed", async () => {
    const base = uniqueChannel("again");
    const [A, B] = [`${base}-a`, `${base}-b`];
    const { client: c, rec } = makeClient(kind, server.url);
    clients.push(c);
    new Collector(c, [A]);
    const colB = new Collector(c, [B]);
    await waitFor(() => c.status === "connected", "connected");
    await server.say(B, "seen");
    await waitFor(() => colB.count() === 1, "B event");
    colB.unsubscribe();
    await waitFor(() => rec.connections === 2 && c.status === "connected", "reconnected without B");
    const missed = await server.say(B, "missed");
    const colB2 = new Collector(c, [B]);
    await waitFor(() => rec.connections === 3 && c.status === "connected", "reconnected with B");
    expect(cursorOf(rec.lastUrl)).not.toContain(B);
    const live = await server.say(B, "live");
    await waitFor(() => colB2.count() >= 1, "live B event");
    await sleep(50);
    expect(colB2.ids(B)).toEqual([live]);
    expect(colB2.ids(B)).not.toContain(missed);
  });

  it("the last unsubscribe closes the connection", async () => {
    const ch = uniqueChannel("last");
    const { client: c, rec } = makeClient(kind, server.url);
    clients.push(c);
    const col = new Collector(c, [ch]);
    await waitFor(() => c.status === "connected", "connected");
    col.unsubscribe();
    col.unsubscribe(); // twice is harmless
    await waitFor(() => c.status === "disconnected", "disconnected");
    expect(rec.closes).toBe(1);
    await server.say(ch, "nobody listens");
    await sleep(50);
    expect(col.count()).toBe(0);
    expect(rec.connections).toBe(1);
  });
});

