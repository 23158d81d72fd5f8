// Stream ids and connection cursors, as the server writes them.
//
// A stream id is `<ms>-<seq>` (two unsigned integers). A cursor is `channel=id` pairs joined by
// commas; channel names never contain `,` or `=`.

/** Compares two stream ids numerically: negative when `a` is older than `b`. */
export function compareIds(a: string, b: string): number {
  const [am = "", as = ""] = a.split("-");
  const [bm = "", bs = ""] = b.split("-");
  return compareDigits(am, bm) || compareDigits(as, bs);
}

// Ids may exceed 2^53, so compare them as digit strings (no leading zeros from the server).
function compareDigits(a: string, b: string): number {
  if (a.length !== b.length) return a.length - b.length;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Reads a cursor into a map of channel → last id. Malformed parts are skipped. */
export function parseCursor(cursor: string): Map<string, string> {
  const out = new Map<string, string>();
  if (!cursor) return out;
  for (const part of cursor.split(",")) {
    const eq = part.indexOf("=");
    if (eq <= 0) continue;
    const id = part.slice(eq + 1);
    if (/^\d+-\d+$/.test(id)) out.set(part.slice(0, eq), id);
  }
  return out;
}

/** Writes the positions of `channels` (those that have one) as a cursor. */
export function formatCursor(positions: ReadonlyMap<string, string>, channels: Iterable<string>): string {
  const parts: string[] = [];
  for (const channel of channels) {
    const id = positions.get(channel);
    if (id !== undefined) parts.push(`${channel}=${id}`);
  }
  return parts.join(",");
}
