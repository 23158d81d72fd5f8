// Filters through the client: subscriptions with their own filters share one connection, the
// server sends what any of them wants (and nothing else), each gets what its filter passes.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Client, Envelope } from "./generated/index.js";
import { KINDS, makeClient, uniqueChannel, waitFor } from "./support/client.js";
import { startServer, type Server } from "./support/processes.js";

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

describe.each(KINDS)("%s transport", (kind) => {
  it("two filtered subscriptions on one connection each get exactly their own", async () => {
    const [a, b] = [uniqueChannel("fa"), uniqueChannel("fb")];
    const { client, rec } = makeClient(kind, server.url);
    clients.push(client);
    const adas: Envelope[] = [];
    const bobsOnB: Envelope[] = [];
    let ready = 0;
    client.subscribe({
      channels: [a, b],
      events: ["chat.message"],
      filter: { user: "ada" },
      onData: (e) => adas.push(e),
      onReady: () => (ready += 1),
    });
    client.subscribe({
      channels: [b],
      events: ["chat.message"],
      filter: { user: "bob", text: { prefix: "b" } },
      onData: (e) => bobsOnB.push(e),
      onReady: () => (ready += 1),
    });
    await waitFor(() => ready === 2, "both ready");
    const sent: Record<string, string> = {};
    for (const [ch, user, text] of [
      [a, "ada", "a1"],
      [a, "bob", "b1"],
      [b, "bob", "b2"],
      [b, "bob", "x3"],
      [b, "ada", "a4"],
      [a, "ada", "a5"],
    ] as const) {
      sent[text] = await server.emit(ch, "chat.message", { user, text });
    }
    await waitFor(() => adas.length === 3 && bobsOnB.length === 1, "the matches", 5000, () => `${adas.length} ${bobsOnB.length}`);
    expect(adas.map((e) => e.id)).toEqual([sent["a1"], sent["a4"], sent["a5"]]);
    expect(bobsOnB.map((e) => e.id)).toEqual([sent["b2"]]);
    // The server sent only what a subscription wanted: b1 (bob on a) and x3 never travelled.
    const travelled = rec.frames.flat().filter((f) => f.event === "chat.message").map((f) => (JSON.parse(f.data) as { id: string }).id);
    expect(travelled).not.toContain(sent["b1"]);
    expect(travelled).not.toContain(sent["x3"]);
  });
});
