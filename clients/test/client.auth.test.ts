// The `token` option against a real server started with --jwt-secret: bearer header or query
// parameter, refresh on tidings.expired and on 401, and 401/403 surfaced as errors.
import { createHmac } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { TidingsError, eventSourceTransport, type EventSourceConstructor, type EventSourceLike, type TokenReason } from "../src/index.js";
import { createClient, type Client } from "./generated/index.js";
import { Collector, KINDS, channelsOf, cursorOf, duplicates, makeClient, uniqueChannel, waitFor } from "./support/client.js";
import { sleep, startServer, type Server } from "./support/processes.js";
import { TcpProxy } from "./support/proxy.js";

const SECRET = "vitest-jwt-secret-0123456789abcdef-0123456789";

/** An HS256 JWT over `claims`. */
function sign(claims: Record<string, unknown>, secret = SECRET): string {
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const head = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
  return `${head}.${createHmac("sha256", secret).update(head).digest("base64url")}`;
}

/** A token for `sub` that may subscribe to `subscribe`, expiring `ttl` seconds from now. */
function jwt(options: { sub?: string; subscribe?: readonly string[]; ttl?: number; secret?: string } = {}): string {
  const exp = Math.floor(Date.now() / 1000) + (options.ttl ?? 600);
  return sign({ sub: options.sub ?? "ada", exp, subscribe: options.subscribe ?? ["auth:*"] }, options.secret);
}

let server: Server;
const clients: Client[] = [];
const proxies: TcpProxy[] = [];

beforeAll(async () => {
  server = await startServer({ jwtSecret: SECRET, privateChannels: ["user:{sub}"] });
});
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const p of proxies.splice(0)) await p.close();
});
afterAll(async () => {
  await server?.stop();
});

/** A proxy to the server that records the head of the first request of each connection. */
async function recorder(): Promise<TcpProxy> {
  const p = await TcpProxy.start(server.port);
  proxies.push(p);
  return p;
}

describe.each(KINDS)("%s transport", (kind) => {
  it("without a token the stream is refused with a 401 that stops the client", async () => {
    const { client: c, rec, errors } = makeClient(kind, server.url);
    clients.push(c);
    new Collector(c, [uniqueChannel("auth")]);
    await waitFor(() => c.status === "error", "error status");
    // Backoff is 30–150 ms in these clients: a retry would have happened by now.
    await sleep(700);
    expect(rec.connections).toBe(1);
    expect(errors).toHaveLength(1);
    expect(c.status).toBe("error");
    expect(c.error).toBeInstanceOf(TidingsError);
    expect(c.error?.status).toBe(401);
    expect(c.error?.permanent).toBe(true);
    if (kind === "fetch") {
      expect(c.error?.code).toBe("unauthenticated");
      expect(c.error?.message).toContain("no token");
    }
  });

  it("a token string authenticates the stream and history()", async () => {
    const ch = uniqueChannel("auth");
    const token = jwt();
    const rec = await recorder();
    const { client: c } = makeClient(kind, rec.url, { token });
    clients.push(c);
    const col = new Collector(c, [ch]);
    await waitFor(() => c.status === "connected", "connected");
    const ids = [await server.say(ch, "one"), await server.say(ch, "two"), await server.say(ch, "three")];
    await waitFor(() => col.count() === 3, "three events");
    expect(col.ids(ch)).toEqual(ids);

    const stream = rec.requestsTo(kind === "websocket" ? "/ws" : "/realtime")[0];
    const query = new URL(stream?.path ?? "/", "http://x").searchParams;
    if (kind === "fetch") {
      expect(stream?.headers.authorization).toBe(`Bearer ${token}`);
      expect(query.has("token")).toBe(false);
    } else {
      expect(query.get("token")).toBe(token);
      expect(stream?.headers.authorization).toBeUndefined();
    }
    // Over WebSocket the channels go in the subscribe message, not the URL.
    expect(query.getAll("channel")).toEqual(kind === "websocket" ? [] : [ch]);

    // history() always uses fetch: the header, never the query parameter.
    const entries = await c.history(ch);
    expect(entries.map((e) => e.id)).toEqual(ids);
    const read = rec.requestsTo("/history");
    expect(read).toHaveLength(1);
    expect(read[0]?.headers.authorization).toBe(`Bearer ${token}`);
    expect(new URL(read[0]?.path ?? "/", "http://x").searchParams.has("token")).toBe(false);
  });

  it("a token function: after tidings.expired the stream goes on with a fresh token, nothing lost or repeated", async () => {
    const ch = uniqueChannel("auth");
    const reasons: TokenReason[] = [];
    const { client: c, rec, statuses } = makeClient(kind, server.url, {
      token: ({ reason }) => {
        reasons.push(reason);
        // The first token expires within 1–2 s (exp has a resolution of one second).
        return reasons.length === 1 ? jwt({ ttl: 2 }) : jwt({ ttl: 600 });
      },
    });
    clients.push(c);
    const col = new Collector(c, [ch]);
    await waitFor(() => c.status === "connected", "connected");

    // Emit steadily through the expiry and the reconnect.
    const emitted: string[] = [];
    let emitting = true;
    const pump = (async () => {
      let n = 0;
      while (emitting) {
        emitted.push(await server.say(ch, `m${n++}`));
        await sleep(20);
      }
    })();
    const expiredFrame = () => rec.frames.some((frames) => frames.some((f) => f.event === "tidings.expired"));
    await waitFor(() => expiredFrame() && rec.connections === 2 && c.status === "connected", "reconnected after expiry", 6000);
    await sleep(200);
    emitting = false;
    await pump;
    await waitFor(() => col.count() === emitted.length, `all ${emitted.length} events`, 5000, () => `${col.count()} received`);

    expect(col.ids(ch)).toEqual(emitted);
    expect(duplicates(col.ids(ch))).toEqual([]);
    expect(reasons).toEqual(["connect", "expired"]);
    expect(statuses).toEqual(["connecting", "connected", "connecting", "connected"]);
    // The second connection resumed from the cursor of the expired one.
    const expired = rec.frames[0]?.find((f) => f.event === "tidings.expired");
    expect(expired?.data).toContain("token expired");
    expect(cursorOf(rec.urls[1] ?? "")).toContain(`${ch}=`);
    expect(channelsOf(rec.urls[1] ?? "")).toEqual([ch]);
    // Events arrived on both sides of the reconnect.
    const before = rec.frames[0]?.filter((f) => f.event === "chat.message").length ?? 0;
    expect(before).toBeGreaterThan(0);
    expect(col.count()).toBeGreaterThan(before);
  });

  it("a 401 with a token function is retried with a token asked for again", async () => {
    const ch = uniqueChannel("auth");
    const reasons: TokenReason[] = [];
    const { client: c, rec, statuses, errors } = makeClient(kind, server.url, {
      token: async ({ reason }) => {
        reasons.push(reason);
        await sleep(1);
        return reasons.length === 1 ? jwt({ secret: "not-the-secret-not-the-secret-not-the-secret" }) : jwt();
      },
    });
    clients.push(c);
    const col = new Collector(c, [ch]);
    await waitFor(() => c.status === "connected", "connected after the refused token");
    expect(rec.connections).toBe(2);
    expect(reasons).toEqual(["connect", "unauthenticated"]);
    expect(statuses).toEqual(["connecting", "error", "connecting", "connected"]);
    expect(errors).toHaveLength(1);
    expect(errors[0]?.status).toBe(401);
    expect(errors[0]?.permanent).toBe(false);
    if (kind === "fetch") expect(errors[0]?.message).toContain("bad signature");
    const id = await server.say(ch, "in");
    await waitFor(() => col.count() === 1, "an event");
    expect(col.ids(ch)).toEqual([id]);
  });

  it("a token without the right to a channel is a 403: surfaced, not retried", async () => {
    let calls = 0;
    const { client: c, rec, errors } = makeClient(kind, server.url, {
      token: () => {
        calls += 1;
        return jwt({ subscribe: ["auth:*"] });
      },
    });
    clients.push(c);
    const allowed = uniqueChannel("auth");
    const unsubscribe = c.subscribe({ channels: [allowed, uniqueChannel("secret")], onData() {} });
    await waitFor(() => c.status === "error", "error status");
    await sleep(700);
    expect(rec.connections).toBe(1);
    expect(calls).toBe(1);
    expect(errors).toHaveLength(1);
    expect(c.error?.status).toBe(403);
    expect(c.error?.permanent).toBe(true);
    if (kind === "fetch") {
      expect(c.error?.code).toBe("forbidden");
      expect(c.error?.message).toContain("does not allow subscribing");
    }
    // Dropping the forbidden channel connects again.
    unsubscribe();
    new Collector(c, [allowed]);
    await waitFor(() => c.status === "connected", "connected without the forbidden channel");
    expect(rec.connections).toBe(2);
    expect(calls).toBe(2);
  });

  it("private channels: the token's own is readable, another user's is a 403", async () => {
    const token = jwt({ sub: "ada", subscribe: ["user:{sub}", "user:*"] });
    const own = makeClient(kind, server.url, { token });
    clients.push(own.client);
    const col = new Collector(own.client, ["user:ada"]);
    await waitFor(() => own.client.status === "connected", "connected to user:ada");
    const id = await server.say("user:ada", "hi ada");
    await waitFor(() => col.count() === 1, "ada's event");
    expect(col.ids("user:ada")).toEqual([id]);

    const other = makeClient(kind, server.url, { token });
    clients.push(other.client);
    new Collector(other.client, ["user:bob"]);
    await waitFor(() => other.client.status === "error", "error on user:bob");
    await sleep(500);
    expect(other.rec.connections).toBe(1);
    expect(other.client.error?.status).toBe(403);
    expect(other.client.error?.permanent).toBe(true);
  });

  it("a fixed token that expires ends in a 401 that stops the client", async () => {
    const ch = uniqueChannel("auth");
    const { client: c, rec, statuses } = makeClient(kind, server.url, { token: jwt({ ttl: 2 }) });
    clients.push(c);
    const col = new Collector(c, [ch]);
    await waitFor(() => c.status === "connected", "connected");
    const id = await server.say(ch, "before");
    await waitFor(() => c.status === "error", "error after the expiry", 6000);
    await sleep(500);
    expect(rec.connections).toBe(2);
    expect(rec.frames[0]?.some((f) => f.event === "tidings.expired")).toBe(true);
    expect(statuses).toEqual(["connecting", "connected", "connecting", "error"]);
    expect(c.error?.status).toBe(401);
    expect(c.error?.permanent).toBe(true);
    if (kind === "fetch") expect(c.error?.message).toContain("token expired");
    expect(col.ids(ch)).toEqual([id]);
  });
});

describe("fetch transport only", () => {
  it("history(): asks the token function before each read, and once more after a 401", async () => {
    const ch = uniqueChannel("auth");
    const id = await server.say(ch, "stored");
    const reasons: TokenReason[] = [];
    let refuse = true;
    const c = createClient({
      url: server.url,
      transport: "fetch",
      token: ({ reason }) => {
        reasons.push(reason);
        if (refuse) {
          refuse = false;
          return jwt({ ttl: -10 }); // already expired
        }
        return jwt();
      },
    });
    clients.push(c);
    expect((await c.history(ch)).map((e) => e.id)).toEqual([id]);
    expect(reasons).toEqual(["history", "unauthenticated"]);
    expect((await c.history(ch)).map((e) => e.id)).toEqual([id]);
    expect(reasons).toEqual(["history", "unauthenticated", "history"]);

    // A 403 is not retried, and a fixed token that is refused is asked for once.
    const forbidden = await c.history(uniqueChannel("secret")).catch((e: unknown) => e);
    expect(forbidden).toBeInstanceOf(TidingsError);
    expect((forbidden as TidingsError).status).toBe(403);
    expect(reasons).toHaveLength(4);
    const fixed = createClient({ url: server.url, transport: "fetch", token: jwt({ ttl: -10 }) });
    clients.push(fixed);
    const refused = await fixed.history(ch).catch((e: unknown) => e);
    expect((refused as TidingsError).status).toBe(401);
    expect((refused as TidingsError).code).toBe("unauthenticated");
  });

  it("the token replaces an Authorization of headers, whatever its case; other headers stay", async () => {
    const token = jwt();
    const rec = await recorder();
    const { client: c } = makeClient("fetch", rec.url, {
      token,
      headers: { AUTHORIZATION: "Bearer stale", "X-Tidings-Test": "yes" },
    });
    clients.push(c);
    new Collector(c, [uniqueChannel("auth")]);
    await waitFor(() => c.status === "connected", "connected");
    expect(rec.requestsTo("/realtime")[0]?.headers).toMatchObject({
      authorization: `Bearer ${token}`,
      "x-tidings-test": "yes",
    });
  });

  it("a token function that returns nothing sends no token; one that throws is retried with backoff", async () => {
    let calls = 0;
    const { client: c, rec, errors } = makeClient("fetch", server.url, {
      token: () => {
        calls += 1;
        if (calls === 1) throw new Error("sign-in service down");
        if (calls === 2) return null; // 401, retried: the function may answer later
        return jwt();
      },
    });
    clients.push(c);
    new Collector(c, [uniqueChannel("auth")]);
    await waitFor(() => c.status === "connected", "connected");
    expect(calls).toBe(3);
    expect(rec.connections).toBe(2); // the first attempt never reached the transport
    expect(errors.map((e) => e.message)[0]).toBe("the token function failed");
    expect((errors[0]?.cause as Error).message).toBe("sign-in service down");
    expect(errors[1]?.status).toBe(401);
  });
});

describe("eventSourceTransport", () => {
  it("appends the token to the URL's query, relative or not", () => {
    const urls: string[] = [];
    class FakeEventSource implements EventSourceLike {
      readyState = 0;
      onopen = null;
      onerror = null;
      constructor(url: string) {
        urls.push(url);
      }
      addEventListener() {}
      close() {}
    }
    const transport = eventSourceTransport(FakeEventSource as unknown as EventSourceConstructor);
    const handlers = { onOpen() {}, onFrame() {}, onError() {} };
    const opts = { eventNames: [], headers: {}, withCredentials: false };
    transport("/rt/realtime?channel=a", { ...opts, token: "a.b+c/d=" }, handlers).close();
    transport("https://rt.example.com/realtime", { ...opts, token: "t" }, handlers).close();
    transport("/realtime?channel=a", opts, handlers).close();
    expect(urls).toEqual([
      "/rt/realtime?channel=a&token=a.b%2Bc%2Fd%3D",
      "https://rt.example.com/realtime?token=t",
      "/realtime?channel=a",
    ]);
  });
});
