// Pure functions of the core client: backoff delays, cursors, errors.
import { describe, expect, it } from "vitest";
import { DEFAULT_BACKOFF, TidingsError, backoffDelay, compareIds, formatCursor, idOf, parseCursor } from "../src/index.js";

describe("backoffDelay", () => {
  it("doubles from 500 ms and caps at 30 s without jitter draw", () => {
    const delays = Array.from({ length: 10 }, (_, attempt) => backoffDelay(DEFAULT_BACKOFF, attempt, () => 0));
    expect(delays).toEqual([500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]);
  });

  it("takes up to `jitter` of each delay away, never adds", () => {
    const b = { initialMs: 500, maxMs: 30_000, factor: 2, jitter: 0.5 };
    expect(backoffDelay(b, 0, () => 0.5)).toBe(375);
    expect(backoffDelay(b, 2, () => 0.5)).toBe(1500);
    expect(backoffDelay(b, 0, () => 0.999999)).toBe(250);
    expect(backoffDelay(b, 20, () => 0.999999)).toBe(15000);
    for (let attempt = 0; attempt < 12; attempt++) {
      const base = Math.min(30_000, 500 * 2 ** attempt);
      for (let i = 0; i < 50; i++) {
        const d = backoffDelay(b, attempt, Math.random);
        expect(d).toBeGreaterThanOrEqual(Math.round(base / 2));
        expect(d).toBeLessThanOrEqual(base);
      }
    }
  });

  it("clamps jitter to 0–1 and survives huge attempt numbers", () => {
    const b = { initialMs: 100, maxMs: 1000, factor: 3, jitter: 0 };
    expect(backoffDelay(b, 0, () => 0.9)).toBe(100);
    expect(backoffDelay(b, 1, () => 0.9)).toBe(300);
    expect(backoffDelay(b, 2, () => 0.9)).toBe(900);
    expect(backoffDelay(b, 3, () => 0.9)).toBe(1000);
    expect(backoffDelay(b, 5000, () => 0)).toBe(1000);
    expect(backoffDelay({ ...b, jitter: -1 }, 0, () => 0.9)).toBe(100);
    expect(backoffDelay({ ...b, jitter: 7 }, 0, () => 0.5)).toBe(50);
  });
});

describe("cursor helpers", () => {
  it("compares ids numerically, beyond 2^53", () => {
    expect(compareIds("1-0", "1-0")).toBe(0);
    expect(compareIds("9-0", "10-0")).toBeLessThan(0);
    expect(compareIds("10-2", "10-11")).toBeLessThan(0);
    expect(compareIds("1700000000001-0", "1700000000000-99")).toBeGreaterThan(0);
    expect(compareIds("18446744073709551615-1", "18446744073709551614-9")).toBeGreaterThan(0);
    expect(compareIds("9007199254740993-0", "9007199254740992-0")).toBeGreaterThan(0);
  });

  it("compares positions by their ids, whatever their epochs", () => {
    expect(compareIds("5-0@0000abcd", "5-0")).toBe(0);
    expect(compareIds("5-1@0000abcd", "5-0@ffff0000")).toBeGreaterThan(0);
    expect(idOf("5-1@0000abcd")).toBe("5-1");
    expect(idOf("5-1")).toBe("5-1");
  });

  it("parses cursors and skips malformed parts", () => {
    const parsed = parseCursor(
      "room:1=5-0@5f3a09c1,alerts=0-0,bad,=1-0,x=nope,y=1-2-3,z=7-1,e1=1-0@,e2=1-0@XYZ00000,e3=1-0@5f3a09c",
    );
    expect([...parsed]).toEqual([
      ["room:1", "5-0@5f3a09c1"],
      ["alerts", "0-0"],
      ["z", "7-1"],
    ]);
    expect(parseCursor("").size).toBe(0);
  });

  it("formats the positions of the given channels, in the given order", () => {
    const positions = new Map([
      ["b", "2-0"],
      ["a", "1-0"],
    ]);
    expect(formatCursor(positions, ["a", "b", "c"])).toBe("a=1-0,b=2-0");
    expect(formatCursor(positions, ["c"])).toBe("");
    expect(parseCursor(formatCursor(positions, ["b", "a"]))).toEqual(new Map([["b", "2-0"], ["a", "1-0"]]));
  });
});

describe("TidingsError", () => {
  it("reads the server's JSON error body", async () => {
    const res = new Response(JSON.stringify({ error: "invalid_channel", message: "bad name" }), { status: 400 });
    const e = await TidingsError.fromResponse(res);
    expect(e).toBeInstanceOf(TidingsError);
    expect(e.name).toBe("TidingsError");
    expect(e.status).toBe(400);
    expect(e.code).toBe("invalid_channel");
    expect(e.message).toBe("400: bad name");
    expect(e.permanent).toBe(true);
  });

  it("keeps the status line for a body that is not JSON", async () => {
    const e = await TidingsError.fromResponse(new Response("<html>", { status: 502, statusText: "Bad Gateway" }));
    expect(e.status).toBe(502);
    expect(e.code).toBeUndefined();
    expect(e.message).toBe("502 Bad Gateway");
    expect(e.permanent).toBe(false);
  });

  it("treats 401, 408 and 429 as worth retrying, other 4xx (403 too) as permanent", () => {
    for (const status of [401, 408, 429, 500, 503]) {
      expect(new TidingsError("x", { status }).permanent, String(status)).toBe(false);
    }
    for (const status of [400, 403, 404, 413, 422]) {
      expect(new TidingsError("x", { status }).permanent, String(status)).toBe(true);
    }
    expect(new TidingsError("x").permanent).toBe(false);
  });

  it("takes an explicit permanent over the status rule", () => {
    expect(new TidingsError("x", { status: 401, permanent: true }).permanent).toBe(true);
    expect(new TidingsError("x", { status: 400, permanent: false }).permanent).toBe(false);
    expect(new TidingsError("x", { permanent: true }).permanent).toBe(true);
  });
});
