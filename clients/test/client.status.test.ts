// Status transitions, errors from the server, and the headers the fetch transport sends.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { TidingsError } from "../src/index.js";
import type { Client } from "./generated/index.js";
import { Collector, KINDS, makeClient, uniqueChannel, waitFor } from "./support/client.js";
import { startServer, sleep, type Server } from "./support/processes.js";
import { TcpProxy } from "./support/proxy.js";

let server: Server;
let proxy: TcpProxy;
const clients: Client[] = [];
const proxies: TcpProxy[] = [];

beforeAll(async () => {
  server = await startServer();
  proxy = await TcpProxy.start(server.port);
});
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const p of proxies.splice(0)) await p.close();
  proxy.refuse(false);
});
afterAll(async () => {
  await proxy?.close();
  await server?.stop();
});

describe.each(KINDS)("%s transport", (kind) => {
  it("connecting → connected → error on a drop → connected → disconnected", async () => {
    const ch = uniqueChannel("status");
    const { client: c, statuses, errors } = makeClient(kind, proxy.url);
    clients.push(c);
    expect(c.status).toBe("disconnected");
    const col = new Collector(c, [ch]);
    expect(c.status).toBe("disconnected"); // nothing happens before the next microtask
    await waitFor(() => c.status === "connected", "connected");
    expect(statuses).toEqual(["connecting", "connected"]);
    expect(c.error).toBeUndefined();

    proxy.refuse(true);
    proxy.dropAll();
    await waitFor(() => statuses.filter((s) => s === "error").length >= 3, "three failed attempts");
    expect(errors.length).toBeGreaterThanOrEqual(3);
    for (const e of errors) expect(e).toBeInstanceOf(TidingsError);
    proxy.refuse(false);
    await waitFor(() => c.status === "connected", "connected again");
    expect(c.error).toBeUndefined();
    expect(statuses.join(",")).toMatch(/^connecting,connected,error(,connecting,error)+,connecting,connected$/);

    const id = await server.say(ch, "after");
    await waitFor(() => col.count() === 1, "event after reconnecting");
    expect(col.ids(ch)).toEqual([id]);

    col.unsubscribe();
    await waitFor(() => c.status === "disconnected", "disconnected after the last unsubscribe");
    expect(statuses.at(-1)).toBe("disconnected");

    new Collector(c, [ch]);
    await waitFor(() => c.status === "connected", "connected on a new subscription");
    const n = statuses.length;
    c.close();
    expect(c.status).toBe("disconnected");
    expect(statuses.slice(n)).toEqual(["disconnected"]);
    expect(() => c.subscribe({ channels: [ch], onData() {} })).toThrow(TidingsError);
    await sleep(100);
    expect(statuses.slice(n)).toEqual(["disconnected"]);
  });

  it("status listeners can be removed", async () => {
    const ch = uniqueChannel("listener");
    const { client: c } = makeClient(kind, server.url);
    clients.push(c);
    const seen: string[] = [];
    const stop = c.onStatus((s) => seen.push(s));
    new Collector(c, [ch]);
    await waitFor(() => c.status === "connected", "connected");
    stop();
    c.close();
    expect(seen).toEqual(["connecting", "connected"]);
  });

  it("a refused stream (400) surfaces as an error", async () => {
    const { client: c, errors } = makeClient(kind, server.url, { maxAttempts: 1 });
    clients.push(c);
    c.subscribe({ channels: ["bad channel"], onData() {} });
    await waitFor(() => c.status === "error", "error status");
    await sleep(100);
    expect(c.status).toBe("error"); // maxAttempts: 1
    expect(c.error).toBeInstanceOf(TidingsError);
    expect(errors).toHaveLength(1);
    if (kind === "fetch") {
      expect(c.error?.status).toBe(400);
      expect(c.error?.code).toBe("invalid_channel");
      expect(c.error?.permanent).toBe(true);
    }
  });
});

it("fetch: a 400 is not retried until the subscriptions change", async () => {
  const { client: c, rec, errors } = makeClient("fetch", server.url);
  clients.push(c);
  const unsubscribe = c.subscribe({ channels: ["ok", "not ok"], onData() {} });
  await waitFor(() => errors.length >= 1, "the refused attempt");
  expect(errors[0]?.status).toBe(400);
  expect(errors[0]?.code).toBe("invalid_channel");
  // Well past the first backoff delays (0.5 s, 1 s): the same request is not sent again.
  await sleep(1800);
  expect(rec.connections).toBe(1);
  expect(c.status).toBe("error");
  // Fixing the subscription reconnects at once.
  unsubscribe();
  c.subscribe({ channels: ["ok"], onData() {} });
  await waitFor(() => c.status === "connected", "connected after the fix");
  expect(rec.connections).toBe(2);
});

it("fetch: a server that is not there is an error without a status", async () => {
  const dead = await TcpProxy.start(1); // nothing listens on port 1
  proxies.push(dead);
  dead.refuse(true);
  const { client: c } = makeClient("fetch", dead.url, { maxAttempts: 1 });
  clients.push(c);
  c.subscribe({ channels: ["x"], onData() {} });
  await waitFor(() => c.status === "error", "error status");
  expect(c.error).toBeInstanceOf(TidingsError);
  expect(c.error?.status).toBeUndefined();
  expect(c.error?.permanent).toBe(false);
});

it("fetch: sends the headers option on every connection and on history()", async () => {
  const ch = uniqueChannel("headers");
  const recorder = await TcpProxy.start(server.port);
  proxies.push(recorder);
  let calls = 0;
  const { client: c } = makeClient("fetch", recorder.url, {
    headers: async () => {
      calls += 1;
      return { Authorization: `Bearer token-${calls}`, "X-Tidings-Test": "yes" };
    },
  });
  clients.push(c);
  new Collector(c, [ch]);
  await waitFor(() => c.status === "connected", "connected");
  const first = recorder.requestsTo("/realtime");
  expect(first).toHaveLength(1);
  expect(first[0]?.method).toBe("GET");
  expect(first[0]?.headers).toMatchObject({
    authorization: "Bearer token-1",
    "x-tidings-test": "yes",
    accept: "text/event-stream",
  });

  recorder.dropAll();
  await waitFor(() => recorder.requestsTo("/realtime").length === 2 && c.status === "connected", "reconnected");
  expect(recorder.requestsTo("/realtime")[1]?.headers.authorization).toBe("Bearer token-2");

  await c.history(ch);
  const history = recorder.requestsTo("/history");
  expect(history).toHaveLength(1);
  expect(history[0]?.headers).toMatchObject({
    authorization: "Bearer token-3",
    "x-tidings-test": "yes",
    accept: "application/json",
  });
});

it("fetch: static headers are sent as given", async () => {
  const ch = uniqueChannel("static");
  const recorder = await TcpProxy.start(server.port);
  proxies.push(recorder);
  const { client: c } = makeClient("fetch", recorder.url, { headers: { authorization: "Bearer fixed" } });
  clients.push(c);
  new Collector(c, [ch]);
  await waitFor(() => c.status === "connected", "connected");
  expect(recorder.requestsTo("/realtime")[0]?.headers.authorization).toBe("Bearer fixed");
});
