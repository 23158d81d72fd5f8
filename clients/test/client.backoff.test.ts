// The reconnect schedule, under fake timers, with a fake transport that fails on cue.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { TidingsError, createClient, type ClientOptions, type Status, type Transport, type TransportHandlers } from "../src/index.js";
import { cursorOf } from "./support/client.js";

interface FakeConn {
  url: string;
  at: number;
  headers: Record<string, string>;
  handlers: TransportHandlers;
  closed: boolean;
}

type Behavior = (conn: FakeConn, index: number) => void;

const failSoon: Behavior = (c) => queueMicrotask(() => c.handlers.onError(new TidingsError("down")));
const readySoon =
  (id = "a=0-0"): Behavior =>
  (c) =>
    queueMicrotask(() => c.handlers.onFrame({ event: "tidings.ready", data: "{}", id }));

class FakeTransport {
  readonly conns: FakeConn[] = [];
  constructor(public behavior: Behavior) {}
  readonly transport: Transport = (url, options, handlers) => {
    const conn: FakeConn = { url, at: Date.now(), headers: options.headers, handlers, closed: false };
    this.conns.push(conn);
    this.behavior(conn, this.conns.length - 1);
    return {
      close: () => {
        conn.closed = true;
      },
    };
  };
  /** Delays between consecutive connection attempts. */
  gaps(): number[] {
    return this.conns.slice(1).map((c, i) => c.at - (this.conns[i]?.at ?? 0));
  }
  get open(): number {
    return this.conns.filter((c) => !c.closed).length;
  }
  conn(i: number): FakeConn {
    const c = this.conns[i];
    if (!c) throw new Error(`no connection #${i} (have ${this.conns.length})`);
    return c;
  }
}

async function flush(): Promise<void> {
  for (let i = 0; i < 50; i++) await Promise.resolve();
}

async function advance(ms: number): Promise<void> {
  await vi.advanceTimersByTimeAsync(ms);
  await flush();
}

function setup(behavior: Behavior, options: Partial<ClientOptions> = {}) {
  const fake = new FakeTransport(behavior);
  const client = createClient({ url: "http://tidings.test", transport: fake.transport, random: () => 0, ...options });
  const statuses: Status[] = [];
  client.onStatus((s) => statuses.push(s));
  return { fake, client, statuses };
}

beforeEach(() => {
  vi.useFakeTimers({ now: 1_000_000 });
});
afterEach(() => {
  vi.useRealTimers();
});

describe("reconnect schedule", () => {
  it("retries after 500, 1000, 2000 … ms, capped at maxMs", async () => {
    const { fake, client } = setup(failSoon, { backoff: { maxMs: 4000 } });
    client.subscribe({ channels: ["a"], onData() {} });
    await flush();
    expect(fake.conns).toHaveLength(1);
    expect(client.status).toBe("error");
    await advance(499);
    expect(fake.conns).toHaveLength(1);
    await advance(1);
    expect(fake.conns).toHaveLength(2);
    await advance(999);
    expect(fake.conns).toHaveLength(2);
    await advance(1);
    expect(fake.conns).toHaveLength(3);
    await advance(30_000);
    expect(fake.gaps().slice(0, 8)).toEqual([500, 1000, 2000, 4000, 4000, 4000, 4000, 4000]);
    client.close();
  });

  it("keeps every delay within its jitter bounds", async () => {
    const { fake, client } = setup(failSoon, { random: Math.random, backoff: { initialMs: 100, maxMs: 3200, jitter: 0.5 } });
    client.subscribe({ channels: ["a"], onData() {} });
    await advance(60_000);
    const gaps = fake.gaps();
    expect(gaps.length).toBeGreaterThan(15);
    gaps.forEach((gap, attempt) => {
      const base = Math.min(3200, 100 * 2 ** attempt);
      expect(gap, `attempt ${attempt}`).toBeGreaterThanOrEqual(Math.round(base / 2));
      expect(gap, `attempt ${attempt}`).toBeLessThanOrEqual(base);
    });
    client.close();
  });

  it("uses the random source it is given", async () => {
    const { fake, client } = setup(failSoon, { random: () => 0.5 });
    client.subscribe({ channels: ["a"], onData() {} });
    await advance(10_000);
    expect(fake.gaps().slice(0, 3)).toEqual([375, 750, 1500]);
    client.close();
  });

  it("starts over at 500 ms once tidings.ready arrives", async () => {
    const { fake, client, statuses } = setup((c, i) => (i === 3 ? readySoon()(c, i) : failSoon(c, i)));
    client.subscribe({ channels: ["a"], onData() {} });
    await advance(500 + 1000 + 2000);
    expect(fake.conns).toHaveLength(4);
    expect(fake.gaps()).toEqual([500, 1000, 2000]);
    expect(client.status).toBe("connected");
    expect(statuses.at(-1)).toBe("connected");
    await advance(5000); // stays up: no further attempt
    expect(fake.conns).toHaveLength(4);
    const dropAt = Date.now();
    fake.conn(3).handlers.onError(new TidingsError("dropped"));
    expect(client.status).toBe("error");
    await advance(499);
    expect(fake.conns).toHaveLength(4);
    await advance(1);
    expect(fake.conns).toHaveLength(5);
    expect(fake.conn(4).at - dropAt).toBe(500);
    await advance(1000);
    expect(fake.conns).toHaveLength(6);
    expect(fake.conn(5).at - fake.conn(4).at).toBe(1000);
    client.close();
  });

  it("stops after maxAttempts failures in a row and stays in error", async () => {
    const { fake, client } = setup(failSoon, { maxAttempts: 3 });
    client.subscribe({ channels: ["a"], onData() {} });
    await advance(3_600_000);
    expect(fake.conns).toHaveLength(3);
    expect(fake.gaps()).toEqual([500, 1000]);
    expect(client.status).toBe("error");
    expect(client.error).toBeInstanceOf(TidingsError);
    expect(client.error?.message).toBe("down");
    // A new channel set is a new start.
    client.subscribe({ channels: ["b"], onData() {} });
    await flush();
    expect(fake.conns).toHaveLength(4);
    client.close();
  });

  it("maxAttempts: 1 never retries", async () => {
    const { fake, client } = setup(failSoon, { maxAttempts: 1 });
    client.subscribe({ channels: ["a"], onData() {} });
    await advance(600_000);
    expect(fake.conns).toHaveLength(1);
    expect(client.status).toBe("error");
    client.close();
  });

  it("never gives up by default", async () => {
    const { fake, client } = setup(failSoon);
    client.subscribe({ channels: ["a"], onData() {} });
    await advance(60 * 30_000);
    expect(fake.conns.length).toBeGreaterThanOrEqual(55);
    expect(fake.gaps().slice(6, 50).every((g) => g === 30_000)).toBe(true);
    expect(client.status).toBe("error");
    client.close();
    const n = fake.conns.length;
    await advance(120_000);
    expect(fake.conns).toHaveLength(n);
    expect(client.status).toBe("disconnected");
  });

  it("a channel change during the wait reconnects at once and starts the schedule over", async () => {
    const { fake, client } = setup(failSoon);
    client.subscribe({ channels: ["a"], onData() {} });
    await advance(500 + 1000); // two failed retries: the next wait is 2000 ms
    expect(fake.conns).toHaveLength(3);
    await advance(100);
    client.subscribe({ channels: ["b"], onData() {} });
    await flush();
    expect(fake.conns).toHaveLength(4);
    expect(new URL(fake.conn(3).url).searchParams.getAll("channel")).toEqual(["a", "b"]);
    // The old schedule's timer (due at 1500 + 2000) was cancelled; the new one starts at 500.
    await advance(4000 - 1600);
    const t0 = fake.conn(0).at;
    expect(fake.conns.map((c) => c.at - t0)).toEqual([0, 500, 1500, 1600, 2100, 3100]);
    client.close();
  });

  it("retries a transport that reports its error before it returns", async () => {
    const { fake, client } = setup((c) => c.handlers.onError(new TidingsError("refused at once")));
    client.subscribe({ channels: ["a"], onData() {} });
    await flush();
    expect(client.status).toBe("error");
    expect(client.error?.message).toBe("refused at once");
    await advance(500 + 1000);
    expect(fake.conns).toHaveLength(3);
    expect(fake.open).toBe(0);
    client.close();
  });

  it("retries a transport that throws", async () => {
    let calls = 0;
    const throwing: Transport = () => {
      calls += 1;
      throw new TypeError("Invalid URL");
    };
    const client = createClient({ url: "http://tidings.test", transport: throwing, random: () => 0 });
    client.subscribe({ channels: ["a"], onData() {} });
    await flush();
    expect(client.status).toBe("error");
    expect(client.error).toBeInstanceOf(TidingsError);
    expect(client.error?.cause).toBeInstanceOf(TypeError);
    await advance(500);
    expect(calls).toBe(2);
    client.close();
  });
});

describe("connection bookkeeping", () => {
  it("tidings.lagged reconnects at once from the frame's cursor", async () => {
    const { fake, client } = setup((c, i) => {
      if (i > 0) return readySoon("a=3-0")(c, i);
      queueMicrotask(() => {
        c.handlers.onFrame({ event: "tidings.ready", data: "{}", id: "a=1-0" });
        c.handlers.onFrame({
          event: "chat.message",
          data: JSON.stringify({ id: "2-0", channel: "a", event: "chat.message", data: { text: "x", user: "u" } }),
          id: "a=2-0",
        });
        c.handlers.onFrame({ event: "tidings.lagged", data: '{"reason":"slow","cursor":"a=3-0"}', id: "a=3-0" });
      });
    });
    const got: string[] = [];
    client.subscribe({ channels: ["a"], onData: (e) => got.push(e.id) });
    await flush();
    expect(got).toEqual(["2-0"]);
    expect(fake.conns).toHaveLength(2);
    expect(fake.conn(0).closed).toBe(true);
    expect(fake.conn(1).at).toBe(fake.conn(0).at);
    expect(cursorOf(fake.conn(1).url)).toBe("a=3-0");
    expect(client.status).toBe("connected");
    client.close();
  });

  it("opens one connection while an async headers function is pending", async () => {
    let tokens = 0;
    const { fake, client } = setup(readySoon(), {
      headers: async () => {
        await new Promise((resolve) => setTimeout(resolve, 50));
        tokens += 1;
        return { authorization: `Bearer t${tokens}` };
      },
    });
    client.subscribe({ channels: ["a"], onData() {} });
    await advance(10);
    client.subscribe({ channels: ["a"], onData() {} }); // same channel set, from another component
    await advance(200);
    expect(fake.conns).toHaveLength(1);
    expect(fake.open).toBe(1);
    expect(fake.conn(0).headers).toEqual({ authorization: "Bearer t1" });
    expect(client.status).toBe("connected");
    client.close();
    expect(fake.open).toBe(0);
  });

  it("a headers function that fails is retried with backoff", async () => {
    let calls = 0;
    const { fake, client } = setup(readySoon(), {
      headers: () => {
        calls += 1;
        if (calls < 3) throw new Error("no token yet");
        return { authorization: "Bearer ok" };
      },
    });
    client.subscribe({ channels: ["a"], onData() {} });
    await flush();
    expect(client.status).toBe("error");
    expect(client.error?.cause).toBeInstanceOf(Error);
    expect(fake.conns).toHaveLength(0);
    await advance(500 + 1000);
    expect(fake.conns).toHaveLength(1);
    expect(client.status).toBe("connected");
    client.close();
  });

  it("ignores frames and errors from a connection it replaced", async () => {
    const { fake, client } = setup(readySoon());
    const got: string[] = [];
    client.subscribe({ channels: ["a"], onData: (e) => got.push(e.id) });
    await flush();
    client.subscribe({ channels: ["b"], onData() {} });
    await flush();
    expect(fake.conns).toHaveLength(2);
    expect(fake.conn(0).closed).toBe(true);
    const old = fake.conn(0).handlers;
    old.onFrame({
      event: "chat.message",
      data: JSON.stringify({ id: "9-0", channel: "a", event: "chat.message", data: { text: "x", user: "u" } }),
      id: "a=9-0",
    });
    old.onError(new TidingsError("late"));
    await advance(5000);
    expect(got).toEqual([]);
    expect(client.status).toBe("connected");
    expect(fake.conns).toHaveLength(2);
    client.close();
  });
});
