// tidings.reset: history after the client's cursor was trimmed (server keeps 10 per channel).
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Client } from "./generated/index.js";
import { Collector, KINDS, cursorOf, duplicates, makeClient, uniqueChannel, waitFor } from "./support/client.js";
import { startServer, sleep, type Server } from "./support/processes.js";
import { TcpProxy } from "./support/proxy.js";

let server: Server;
let proxy: TcpProxy;
const clients: Client[] = [];

beforeAll(async () => {
  server = await startServer({ historyMaxLen: 10 });
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

describe.each(KINDS)("%s transport", (kind) => {
  it("calls onReset once for the trimmed channel, then delivers what is still held", async () => {
    const trimmed = uniqueChannel("reset");
    const quiet = uniqueChannel("quiet");
    const { client: c, rec, statuses } = makeClient(kind, proxy.url);
    clients.push(c);
    const col = new Collector(c, [trimmed, quiet]);
    await waitFor(() => c.status === "connected", "connected");
    for (let i = 0; i < 3; i++) await server.say(trimmed, `early ${i}`);
    await server.say(quiet, "q0");
    await waitFor(() => col.count() === 4, "4 events");

    proxy.refuse(true);
    proxy.dropAll();
    await waitFor(() => c.status === "error", "error status");
    const cursorAtDrop = c.cursor();
    for (let i = 0; i < 200; i++) await server.say(trimmed, `late ${i}`);
    const quietLate = await server.say(quiet, "q1"); // one event: still within history
    const held = await server.history(trimmed);
    expect(held).toHaveLength(10);
    const oldest = held[0]?.id;

    proxy.refuse(false);
    await waitFor(() => col.count() >= 4 + 10 + 1, "held events after the reset", 5000, () => col.log.join("\n"));
    await sleep(150);

    expect(cursorOf(rec.lastUrl)).toBe(cursorAtDrop);
    expect(col.resets).toEqual([{ channel: trimmed, oldest, reason: "trimmed" }]);
    const resetAt = col.log.indexOf(`reset ${trimmed} ${oldest}`);
    const firstLate = col.log.findIndex((line, i) => i >= 4 && line.startsWith(`data ${trimmed}`));
    expect(resetAt).toBeGreaterThanOrEqual(4); // after the 4 events seen before the drop
    expect(firstLate).toBeGreaterThan(resetAt);
    const ids = col.ids(trimmed);
    expect(duplicates(ids)).toEqual([]);
    expect(ids.slice(3)).toEqual(held.map((e) => e.id)); // exactly the held ones, none older
    expect(col.ids(quiet)).toEqual([col.ids(quiet)[0], quietLate]); // no reset for it, nothing lost
    expect(c.status).toBe("connected");

    // The reset moved the cursor on: the next drop resumes without another reset.
    const seen = statuses.length;
    const connections = rec.connections;
    proxy.dropAll();
    await waitFor(
      () => statuses.slice(seen).includes("error") && rec.connections > connections && c.status === "connected",
      "reconnect after the second drop",
    );
    const next = await server.say(trimmed, "after");
    await waitFor(() => col.ids(trimmed).includes(next), "event after the second reconnect");
    await sleep(50);
    expect(col.resets).toHaveLength(1);
    expect(duplicates(col.ids(trimmed))).toEqual([]);
  });
});

it("a subscription without onReset still gets the held events", async () => {
  const ch = uniqueChannel("noreset");
  const { client: c } = makeClient("fetch", proxy.url);
  clients.push(c);
  const got: string[] = [];
  c.subscribe({ channels: [ch], onData: (e) => got.push(e.id) });
  await waitFor(() => c.status === "connected", "connected");
  await server.say(ch, "first");
  await waitFor(() => got.length === 1, "first event");
  proxy.refuse(true);
  proxy.dropAll();
  await waitFor(() => c.status === "error", "error status");
  for (let i = 0; i < 30; i++) await server.say(ch, String(i));
  proxy.refuse(false);
  const held = (await server.history(ch)).map((e) => e.id);
  await waitFor(() => got.length === 11, "held events", 5000, () => String(got.length));
  expect(got.slice(1)).toEqual(held);
});
