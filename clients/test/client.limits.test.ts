// Connection limits: a stream refused with 503 node_full or 429 too_many_connections carries the
// server's Retry-After, and the client waits it out before its next attempt. Against a real
// server started with --max-connections / --max-connections-per-identity, plus the parsing and
// the schedule under fake timers.
import { createHmac } from "node:crypto";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { TidingsError, parseRetryAfter, type ClientOptions, type Transport, type TransportHandlers } from "../src/index.js";
import { createClient, type Client } from "./generated/index.js";
import { Collector, channelsOf, makeClient, realTransport, uniqueChannel, waitFor, type Kind } from "./support/client.js";
import { sleep, startServer, type Server } from "./support/processes.js";

describe("parseRetryAfter", () => {
  const now = Date.parse("Sun, 06 Nov 1994 08:49:37 GMT");

  it("reads integer seconds", () => {
    expect(parseRetryAfter("5")).toBe(5);
    expect(parseRetryAfter(" 120 ")).toBe(120);
    expect(parseRetryAfter("0")).toBe(0);
  });

  it("reads an HTTP date as the seconds left until it, rounded up, 0 once past", () => {
    expect(parseRetryAfter("Sun, 06 Nov 1994 08:49:47 GMT", now)).toBe(10);
    expect(parseRetryAfter("Sun, 06 Nov 1994 08:49:47 GMT", now + 500)).toBe(10);
    expect(parseRetryAfter("Sun, 06 Nov 1994 08:49:47 GMT", now + 9_001)).toBe(1);
    expect(parseRetryAfter("Sun, 06 Nov 1994 08:49:00 GMT", now)).toBe(0);
    // The obsolete forms a recipient must accept too: RFC 850 and asctime.
    expect(parseRetryAfter("Sunday, 06-Nov-94 08:49:42 GMT", now)).toBe(5);
    expect(parseRetryAfter("Sun Nov  6 08:49:42 1994", now)).toBe(5);
  });

  it("ignores a missing header and garbage", () => {
    for (const v of [null, undefined, "", " ", "soon", "1.5", "-1", "+5", "5 seconds", "0x10", "1e3", "Sun, 06 Nov 1994 08:49:47", "Sun, 06 Nov 1994 25:99:99 GMT"]) {
      expect(parseRetryAfter(v, now), JSON.stringify(v)).toBeUndefined();
    }
  });

  it("TidingsError.fromResponse takes Retry-After, status and code from the response", async () => {
    const body = JSON.stringify({ error: "node_full", message: "this node holds its limit of 1 streams", limit: 1 });
    const e = await TidingsError.fromResponse(
      new Response(body, { status: 503, headers: { "content-type": "application/json", "retry-after": "5" } }),
    );
    expect(e).toMatchObject({ status: 503, code: "node_full", retryAfter: 5, permanent: false });
    const noHeader = await TidingsError.fromResponse(new Response("{}", { status: 429 }));
    expect(noHeader.retryAfter).toBeUndefined();
    expect(noHeader.permanent).toBe(false);
    const garbage = await TidingsError.fromResponse(new Response("{}", { status: 429, headers: { "retry-after": "later" } }));
    expect(garbage.retryAfter).toBeUndefined();
  });

  it("history() rejects with the Retry-After of a refused read", async () => {
    const fakeFetch = (async () =>
      new Response(JSON.stringify({ error: "rate_limited" }), {
        status: 429,
        headers: { "content-type": "application/json", "retry-after": "7" },
      })) as typeof fetch;
    const client = createClient({ url: "http://tidings.test", transport: "fetch", fetch: fakeFetch });
    const err = await client.history("room:1").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TidingsError);
    expect(err).toMatchObject({ status: 429, code: "rate_limited", retryAfter: 7 });
    client.close();
  });
});

describe("reconnect schedule with Retry-After (fake timers)", () => {
  interface FakeConn {
    url: string;
    at: number;
    handlers: TransportHandlers;
  }
  const full = (retryAfter: number) => new TidingsError("503: full", { status: 503, code: "node_full", retryAfter });

  beforeEach(() => {
    vi.useFakeTimers({ now: 1_000_000 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  async function advance(ms: number): Promise<void> {
    await vi.advanceTimersByTimeAsync(ms);
    for (let i = 0; i < 50; i++) await Promise.resolve();
  }

  /** A client whose connection `i` is answered by `behave(conn, i)`. */
  function setup(behave: (conn: FakeConn, i: number) => void, options: Partial<ClientOptions> = {}) {
    const conns: FakeConn[] = [];
    const transport: Transport = (url, _options, handlers) => {
      const conn = { url, at: Date.now(), handlers };
      conns.push(conn);
      queueMicrotask(() => behave(conn, conns.length - 1));
      return { close() {} };
    };
    const client = createClient({ url: "http://tidings.test", transport, random: () => 0, ...options });
    const gaps = () => conns.slice(1).map((c, i) => c.at - (conns[i]?.at ?? 0));
    return { client, conns, gaps };
  }
  const ready = (c: FakeConn) => c.handlers.onFrame({ event: "tidings.ready", data: "{}", id: "a=0-0" });

  it("waits Retry-After when it is longer than the backoff delay", async () => {
    const { client, conns, gaps } = setup((c, i) => (i < 2 ? c.handlers.onError(full(5)) : ready(c)));
    client.subscribe({ channels: ["a"], onData() {} });
    await advance(0);
    expect(client.status).toBe("error");
    expect(client.error?.retryAfter).toBe(5);
    await advance(4999);
    expect(conns).toHaveLength(1);
    await advance(1);
    expect(conns).toHaveLength(2);
    await advance(5000);
    expect(conns).toHaveLength(3);
    expect(gaps()).toEqual([5000, 5000]);
    expect(client.status).toBe("connected");
    client.close();
  });

  it("keeps the backoff delay when it is the longer one", async () => {
    const { client, gaps } = setup((c, i) => (i < 1 ? c.handlers.onError(full(1)) : ready(c)), {
      backoff: { initialMs: 3000 },
    });
    client.subscribe({ channels: ["a"], onData() {} });
    await advance(10_000);
    expect(gaps()).toEqual([3000]);
    client.close();
  });

  it("a change of subscriptions during the wait does not connect earlier", async () => {
    const { client, conns } = setup((c, i) => (i < 1 ? c.handlers.onError(full(5)) : ready(c)));
    client.subscribe({ channels: ["a"], onData() {} });
    await advance(1000);
    expect(conns).toHaveLength(1);
    client.subscribe({ channels: ["b"], onData() {} });
    await advance(3999);
    expect(conns).toHaveLength(1);
    await advance(1);
    expect(conns).toHaveLength(2);
    expect(channelsOf(conns[1]?.url ?? "")).toEqual(["a", "b"]);
    expect(client.status).toBe("connected");
    client.close();
  });

  it("once connected, a later drop reconnects with the plain backoff", async () => {
    const { client, conns, gaps } = setup((c, i) => (i === 0 ? c.handlers.onError(full(5)) : ready(c)));
    client.subscribe({ channels: ["a"], onData() {} });
    await advance(5000);
    expect(client.status).toBe("connected");
    conns[1]?.handlers.onError(new TidingsError("the server ended the event stream"));
    await advance(500);
    expect(conns).toHaveLength(3);
    expect(gaps()).toEqual([5000, 500]);
    client.close();
  });
});

describe("against a real server", () => {
  const clients: Client[] = [];
  const servers: Server[] = [];
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    for (const s of servers.splice(0)) await s.stop();
  });

  async function server(options: Parameters<typeof startServer>[0]): Promise<Server> {
    const s = await startServer(options);
    servers.push(s);
    return s;
  }

  /** A client whose transport stamps the time of every connection attempt. */
  function timedClient(kind: Kind, url: string, extra: Partial<ClientOptions> = {}) {
    const attempts: number[] = [];
    const inner = realTransport(kind);
    const client = createClient({
      url,
      transport: (u, o, h) => {
        attempts.push(Date.now());
        return inner(u, o, h);
      },
      backoff: { initialMs: 30, maxMs: 150 },
      ...extra,
    });
    clients.push(client);
    return { client, attempts };
  }

  async function connected(kind: Kind, url: string, channel: string, extra: Partial<ClientOptions> = {}): Promise<Client> {
    const { client } = makeClient(kind, url, extra);
    clients.push(client);
    new Collector(client, [channel]);
    await waitFor(() => client.status === "connected", "first client connected", 5000, () => String(client.error));
    return client;
  }

  it("a full node refuses with 503 node_full and Retry-After 5; the client waits it out, then connects", async () => {
    const s = await server({ maxConnections: 1 });
    const ch = uniqueChannel("limits");
    const a = await connected("fetch", s.url, ch);

    const { client: b, attempts } = timedClient("fetch", s.url);
    new Collector(b, [ch]);
    await waitFor(() => b.status === "error", "503 for the second client", 3000);
    const refusedAt = Date.now();
    expect(b.error).toBeInstanceOf(TidingsError);
    expect(b.error?.status).toBe(503);
    expect(b.error?.code).toBe("node_full");
    expect(b.error?.retryAfter).toBe(5);
    expect(b.error?.permanent).toBe(false);

    // Its backoff is 30–150 ms: without Retry-After it would have tried a dozen times by now.
    await sleep(2000);
    expect(attempts).toHaveLength(1);
    expect(b.status).toBe("error");

    a.close();
    await waitFor(() => b.status === "connected", "the second client connected", 6000, () => String(b.error));
    expect(attempts).toHaveLength(2);
    const [first = 0, second = 0] = attempts;
    expect(second - first).toBeGreaterThanOrEqual(5000);
    // Retry-After plus at most one backoff delay, plus time to connect.
    expect(Date.now() - refusedAt).toBeLessThan(5000 + 150 + 1500);
  });

  it("the EventSource transport gets the 503 status but no Retry-After, and keeps its backoff", async () => {
    const s = await server({ maxConnections: 1 });
    const ch = uniqueChannel("limits");
    await connected("fetch", s.url, ch);

    const { client: b, attempts } = timedClient("eventsource", s.url);
    new Collector(b, [ch]);
    await waitFor(() => b.status === "error", "refusal of the EventSource client", 3000);
    expect(b.error?.status).toBe(503);
    expect(b.error?.retryAfter).toBeUndefined();
    await waitFor(() => attempts.length >= 3, "EventSource retries with its own backoff", 3000);
  });

  it("an identity over --max-connections-per-identity gets 429 too_many_connections with Retry-After 5", async () => {
    const secret = "vitest-jwt-secret-0123456789abcdef-0123456789";
    const jwt = (sub: string) => {
      const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
      const exp = Math.floor(Date.now() / 1000) + 600;
      const head = `${part({ alg: "HS256", typ: "JWT" })}.${part({ sub, exp, subscribe: ["limits:*"] })}`;
      return `${head}.${createHmac("sha256", secret).update(head).digest("base64url")}`;
    };
    const s = await server({ jwtSecret: secret, maxConnectionsPerIdentity: 1 });
    const ch = uniqueChannel("limits");
    await connected("fetch", s.url, ch, { token: jwt("ada") });

    const { client: b, attempts } = timedClient("fetch", s.url, { token: jwt("ada") });
    new Collector(b, [ch]);
    await waitFor(() => b.status === "error", "429 for the same identity", 3000);
    expect(b.error?.status).toBe(429);
    expect(b.error?.code).toBe("too_many_connections");
    expect(b.error?.retryAfter).toBe(5);
    expect(b.error?.permanent).toBe(false);

    // Another identity is not affected.
    await connected("fetch", s.url, ch, { token: jwt("bob") });
    await sleep(500);
    expect(attempts).toHaveLength(1);
  });
});
