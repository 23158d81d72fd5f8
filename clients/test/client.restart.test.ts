// A server restart on Redis: the client resumes from its cursor on the new process.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { parseCursor } from "../src/index.js";
import type { Client } from "./generated/index.js";
import { Collector, KINDS, cursorOf, duplicates, makeClient, uniqueChannel, waitFor } from "./support/client.js";
import { startRedis, startServer, sleep, type Redis, type Server } from "./support/processes.js";
import { TcpProxy } from "./support/proxy.js";

let redis: Redis;
const servers: Server[] = [];
const clients: Client[] = [];
const proxies: TcpProxy[] = [];

beforeAll(async () => {
  redis = await startRedis();
});
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const p of proxies.splice(0)) await p.close();
  for (const s of servers.splice(0)) await s.stop();
});
afterAll(async () => {
  await redis?.stop();
});

async function server(): Promise<Server> {
  const s = await startServer({ redis: redis.url });
  servers.push(s);
  return s;
}

describe.each(KINDS)("%s transport", (kind) => {
  it("resumes on a restarted server without loss or repeats", async () => {
    const base = uniqueChannel("restart");
    const chans = [`${base}-a`, `${base}-b`, `${base}-c`];
    const first = await server();
    const proxy = await TcpProxy.start(first.port);
    proxies.push(proxy);
    const { client: c, rec, statuses } = makeClient(kind, proxy.url);
    clients.push(c);
    const col = new Collector(c, chans);
    await waitFor(() => c.status === "connected", "connected");
    for (let i = 0; i < 9; i++) await first.say(chans[i % 3] as string, `old ${i}`);
    await waitFor(() => col.count() === 9, "9 events");

    // The server dies; nobody can connect until its successor is up.
    proxy.refuse(true);
    await first.stop("SIGKILL");
    await waitFor(() => c.status === "error", "error after the crash");
    const cursorAtCrash = c.cursor();
    const second = await server();
    proxy.target = second.port;
    for (let i = 0; i < 15; i++) await second.say(chans[i % 3] as string, `new ${i}`);
    await sleep(100);
    expect(col.count()).toBe(9);
    proxy.refuse(false);

    await waitFor(() => col.count() >= 24, "24 events", 5000, () => String(col.count()));
    await sleep(100);
    expect(col.count()).toBe(24);
    for (const ch of chans) {
      const ids = col.ids(ch);
      expect(duplicates(ids)).toEqual([]);
      expect(ids).toEqual((await second.history(ch)).map((e) => e.id));
    }
    expect(cursorOf(rec.lastUrl)).toBe(cursorAtCrash);
    expect(parseCursor(cursorAtCrash).size).toBe(3);
    expect(statuses.at(-1)).toBe("connected");
  });

  it("a graceful shutdown ends the stream and the client moves on", async () => {
    const ch = uniqueChannel("graceful");
    const first = await server();
    const proxy = await TcpProxy.start(first.port);
    proxies.push(proxy);
    const { client: c, statuses } = makeClient(kind, proxy.url);
    clients.push(c);
    const col = new Collector(c, [ch]);
    await waitFor(() => c.status === "connected", "connected");
    await first.say(ch, "one");
    await waitFor(() => col.count() === 1, "first event");
    const second = await server();
    proxy.target = second.port;
    const seen = statuses.length;
    await first.stop("SIGTERM"); // ends open streams; the client reconnects (to the successor)
    await waitFor(() => statuses.slice(seen).includes("error") && c.status === "connected", "reconnected");
    const id = await second.say(ch, "two");
    await waitFor(() => col.count() === 2, "second event");
    expect(col.ids(ch).at(-1)).toBe(id);
  });
});
