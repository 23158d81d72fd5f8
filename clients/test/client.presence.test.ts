// client.presence() against a real server with --presence: snapshot, join, leave, two tabs of
// one user, a tab closed, watching over SSE, across a reconnect.
import { createHmac } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { TidingsError, type Member } from "../src/index.js";
import type { Client } from "./generated/index.js";
import { makeClient, uniqueChannel, waitFor, type Kind } from "./support/client.js";
import { startServer, type Server } from "./support/processes.js";
import { TcpProxy } from "./support/proxy.js";

const SECRET = "vitest-presence-secret-0123456789abcdef-0123";

function jwt(sub: string, name: string): string {
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const claims = { sub, name, exp: Math.floor(Date.now() / 1000) + 600, subscribe: ["doc:*"] };
  const head = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
  return `${head}.${createHmac("sha256", SECRET).update(head).digest("base64url")}`;
}

let server: Server;
const clients: Client[] = [];
const proxies: TcpProxy[] = [];

beforeAll(async () => {
  server = await startServer({ jwtSecret: SECRET, presence: ["doc:*"] });
});
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const p of proxies.splice(0)) await p.close();
});
afterAll(async () => {
  await server?.stop();
});

/** A client of `sub` watching `channel`'s presence (joining with `join`); `seen()` is the latest member list. */
function watcher(kind: Kind, sub: string, channel: string, join?: true | { status: string }, url = server.url) {
  const { client } = makeClient(kind, url, { token: jwt(sub, sub.toUpperCase()) });
  clients.push(client);
  let latest: readonly Member[] = [];
  let latestCount = 0;
  const history: string[] = [];
  const stop = client.presence<{ status: string }>(channel, {
    ...(join !== undefined ? { join } : {}),
    onChange: (members, count) => {
      latest = members;
      latestCount = count;
      history.push(members.map((m) => m.id).join(","));
    },
  });
  return {
    client,
    stop,
    ids: () => latest.map((m) => m.id),
    members: () => latest,
    count: () => latestCount,
    history,
  };
}

describe("presence", () => {
  it("two members see each other join and leave, with names and data", async () => {
    const doc = uniqueChannel("doc");
    const ada = watcher("websocket", "ada", doc, { status: "editing" });
    await waitFor(() => ada.ids().join() === "ada", "ada sees herself", 5000, () => ada.ids().join());
    const bob = watcher("websocket", "bob", doc, true);
    await waitFor(() => bob.ids().join() === "ada,bob", "bob sees both", 5000, () => bob.ids().join());
    await waitFor(() => ada.ids().join() === "ada,bob", "ada sees bob join", 5000, () => ada.ids().join());
    expect(bob.members()[0]).toEqual({ id: "ada", sub: "ada", name: "ADA", data: { status: "editing" } });
    expect(bob.count()).toBe(2);
    // Bob stops watching: he leaves.
    bob.stop();
    await waitFor(() => ada.ids().join() === "ada", "ada sees bob leave", 5000, () => ada.ids().join());
  });

  it("two tabs of one user are one member, who leaves when the last tab closes", async () => {
    const doc = uniqueChannel("doc");
    const eve = watcher("fetch", "eve", doc); // watches over SSE, does not join
    const tab1 = watcher("websocket", "ada", doc, true);
    const tab2 = watcher("websocket", "ada", doc, true);
    await waitFor(() => tab1.ids().length === 1 && tab2.ids().length === 1, "both tabs present");
    await waitFor(() => eve.ids().join() === "ada", "eve sees one ada", 5000, () => eve.ids().join());
    tab1.client.close();
    await new Promise((r) => setTimeout(r, 300));
    expect(eve.ids()).toEqual(["ada"]);
    tab2.client.close(); // the tab goes away without leaving first
    await waitFor(() => eve.ids().length === 0, "eve sees ada leave", 5000, () => eve.ids().join());
    expect(eve.count()).toBe(0);
  });

  it("a dropped connection rejoins and the snapshot puts the list right", async () => {
    const doc = uniqueChannel("doc");
    const proxy = await TcpProxy.start(server.port);
    proxies.push(proxy);
    const eve = watcher("websocket", "eve", doc);
    const ada = watcher("websocket", "ada", doc, true, proxy.url);
    await waitFor(() => eve.ids().join() === "ada", "eve sees ada");
    proxy.dropAll();
    // Ada's socket is gone: the server sees her leave, then her client reconnects and rejoins.
    await waitFor(() => ada.client.status !== "connected", "ada disconnected", 5000);
    await waitFor(() => ada.client.status === "connected", "ada reconnected", 5000);
    await waitFor(() => ada.ids().includes("ada"), "ada sees herself again", 5000, () => ada.ids().join());
    await waitFor(() => eve.ids().join() === "ada", "ada back for eve", 5000, () => eve.ids().join());
    // Eve saw her go (the server noticed the dead socket) and come back.
    const seen = eve.history.indexOf("ada");
    expect(eve.history.slice(seen)).toContain("");
    expect(eve.history.at(-1)).toBe("ada");
  });

  it("joining needs the WebSocket transport", () => {
    const { client } = makeClient("fetch", server.url, { token: jwt("ada", "A") });
    clients.push(client);
    expect(() => client.presence(uniqueChannel("doc"), { join: true })).toThrow(TidingsError);
  });
});
