// The WebSocket transport's own part: client.emit() over the socket, against a real server with
// --jwt-secret, through the `ws` package (the shared suites run every stream case over it too).
import { createHmac } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { TidingsError } from "../src/index.js";
import type { Client } from "./generated/index.js";
import { Collector, makeClient, uniqueChannel, waitFor } from "./support/client.js";
import { startServer, type Server } from "./support/processes.js";

const SECRET = "vitest-ws-jwt-secret-0123456789abcdef-012345";

function jwt(claims: { sub?: string; subscribe?: string[]; publish?: string[] }): string {
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const body = { sub: claims.sub ?? "ada", exp: Math.floor(Date.now() / 1000) + 600, subscribe: claims.subscribe ?? ["ws:*"], publish: claims.publish ?? [] };
  const head = `${part({ alg: "HS256", typ: "JWT" })}.${part(body)}`;
  return `${head}.${createHmac("sha256", SECRET).update(head).digest("base64url")}`;
}

let server: Server;
const clients: Client[] = [];

beforeAll(async () => {
  server = await startServer({ jwtSecret: SECRET });
});
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});
afterAll(async () => {
  await server?.stop();
});

function client(kind: "websocket" | "fetch", token: string) {
  const made = makeClient(kind, server.url, { token });
  clients.push(made.client);
  return made.client;
}

describe("client.emit over WebSocket", () => {
  it("stores the event, answers its id, and the subscriber gets it exactly once", async () => {
    const ch = uniqueChannel("ws");
    const c = client("websocket", jwt({ publish: ["ws:*"] }));
    const col = new Collector(c, [ch]);
    // Sent before the connection is ready: it waits for it.
    const sent = c.emit(ch, "chat.message", { text: "over the socket", user: "ada" });
    const answer = await sent;
    expect(answer.duplicate).toBe(false);
    await waitFor(() => col.count() === 1, "the event");
    expect(col.ids(ch)).toEqual([answer.id]);
    expect((await c.history(ch)).map((e) => e.id)).toEqual([answer.id]);
  });

  it("an idempotency key stores one event however often it is sent", async () => {
    const ch = uniqueChannel("ws");
    const c = client("websocket", jwt({ publish: ["ws:*"] }));
    new Collector(c, [ch]);
    await waitFor(() => c.status === "connected", "connected");
    const data = { text: "once", user: "ada" };
    const first = await c.emit(ch, "chat.message", data, { idempotencyKey: "order-1" });
    const again = await c.emit(ch, "chat.message", data, { idempotencyKey: "order-1" });
    expect(again).toEqual({ id: first.id, duplicate: true });
    expect(await c.history(ch)).toHaveLength(1);
  });

  it("a refused emit rejects with the server's status and code, and the connection stays", async () => {
    const ch = uniqueChannel("ws");
    const c = client("websocket", jwt({ publish: ["ws:*"] }));
    const col = new Collector(c, [ch]);
    await waitFor(() => c.status === "connected", "connected");
    // Not the schema's shape: 422 invalid_payload.
    const bad = await c.emit(ch, "chat.message", { text: "", user: "ada" } as never).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(TidingsError);
    expect((bad as TidingsError).status).toBe(422);
    expect((bad as TidingsError).code).toBe("invalid_payload");
    // A channel the token may not publish to: 403 forbidden.
    const other = await c.emit("elsewhere:1", "chat.message", { text: "x", user: "ada" }).catch((e: unknown) => e);
    expect((other as TidingsError).status).toBe(403);
    expect((other as TidingsError).code).toBe("forbidden");
    // The same connection still delivers.
    const id = await server.say(ch, "still here");
    await waitFor(() => col.count() === 1, "the event");
    expect(col.ids(ch)).toEqual([id]);
    expect(c.status).toBe("connected");
  });

  it("a token without publish rights is refused", async () => {
    const ch = uniqueChannel("ws");
    const c = client("websocket", jwt({}));
    new Collector(c, [ch]);
    const refused = await c.emit(ch, "chat.message", { text: "x", user: "ada" }).catch((e: unknown) => e);
    expect((refused as TidingsError).status).toBe(403);
  });

  it("emit() on a stream transport, or with nothing subscribed, says what to do instead", async () => {
    const ch = uniqueChannel("ws");
    const sse = client("fetch", jwt({ publish: ["ws:*"] }));
    new Collector(sse, [ch]);
    const e1 = await sse.emit(ch, "chat.message", { text: "x", user: "ada" }).catch((e: unknown) => e);
    expect((e1 as TidingsError).code).toBe("emit_unsupported");
    expect((e1 as TidingsError).message).toContain('transport: "websocket"');
    const idle = client("websocket", jwt({ publish: ["ws:*"] }));
    const e2 = await idle.emit(ch, "chat.message", { text: "x", user: "ada" }).catch((e: unknown) => e);
    expect((e2 as TidingsError).code).toBe("emit_unsupported");
    expect((e2 as TidingsError).message).toContain("subscribe first");
  });
});
