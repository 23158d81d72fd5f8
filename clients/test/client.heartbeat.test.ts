// Dead links are noticed: a connection that goes silent (a proxy that stops forwarding the
// server's bytes without closing anything) is replaced after STALL_FACTOR heartbeats, and the
// events emitted meanwhile arrive exactly once, in order. Against a real server with
// `--heartbeat 1`, on both transports.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { STALL_FACTOR } from "../src/index.js";
import type { Client } from "./generated/index.js";
import { Collector, KINDS, duplicates, makeClient, uniqueChannel, waitFor } from "./support/client.js";
import { sleep, startServer, type Server } from "./support/processes.js";
import { TcpProxy } from "./support/proxy.js";

let server: Server;
let proxy: TcpProxy;
const clients: Client[] = [];

beforeAll(async () => {
  server = await startServer({ heartbeat: 1 });
  proxy = await TcpProxy.start(server.port);
});
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});
afterAll(async () => {
  await proxy?.close();
  await server?.stop();
});

describe.each(KINDS)("%s transport", (kind) => {
  it("a frozen connection is noticed, replaced, and loses nothing", async () => {
    const channel = uniqueChannel("frozen");
    const { client: c, statuses, errors, rec } = makeClient(kind, proxy.url);
    clients.push(c);
    const col = new Collector(c, [channel]);
    await waitFor(() => c.status === "connected", "connected");
    for (let i = 0; i < 3; i++) await server.say(channel, `before ${i}`);
    await waitFor(() => col.count() === 3, "3 events before the freeze");

    // Heartbeats keep a quiet connection alive: nothing reconnects over three intervals.
    await sleep(3_000);
    expect(rec.urls.length, "reconnected while healthy").toBe(1);

    expect(proxy.freezeAll()).toBeGreaterThan(0);
    const frozenAt = Date.now();
    statuses.length = 0;
    for (let i = 0; i < 5; i++) await server.say(channel, `during ${i}`);

    await waitFor(() => statuses.includes("connecting"), "the client noticed", 6_000);
    const noticed = Date.now() - frozenAt;
    // 2.5 heartbeats of silence, measured from the last frame (at most one interval before the
    // freeze), plus timer slack.
    expect(noticed).toBeLessThan(STALL_FACTOR * 1000 + 1500);
    expect(noticed).toBeGreaterThan(1000);
    expect(errors.map((e) => e.code)).toContain("heartbeat_timeout");
    await waitFor(() => col.count() === 8, "every event", 5_000, () => `${col.count()} of 8`);
    await waitFor(() => c.status === "connected", "connected again");
    expect(statuses[0]).toBe("connecting");
    expect(statuses.at(-1)).toBe("connected");
    expect(c.error).toBeUndefined();

    const ids = col.ids(channel);
    expect(duplicates(ids)).toEqual([]);
    expect(ids).toEqual((await server.history(channel)).map((e) => e.id));
    expect(col.envelopes.map((e) => (e.data as { text: string }).text)).toEqual([
      "before 0",
      "before 1",
      "before 2",
      "during 0",
      "during 1",
      "during 2",
      "during 3",
      "during 4",
    ]);
  });
});
