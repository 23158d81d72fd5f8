// Stream ids and connection cursors, as the server writes them.
//
// A stream id is `<ms>-<seq>` (two unsigned integers). A position is an id and, after `@`, the
// epoch of the channel's history it belongs to (`1700000000000-0@5f3a09c1`); the epoch changes
// when that history is lost, so the server can tell a cursor from another history. A cursor is
// `channel=position` pairs joined by commas; channel names never contain `,` or `=`.

/**
 * Compares two stream ids (or positions, by their ids) numerically: negative when `a` is older
 * than `b`.
 */
export function compareIds(a: string, b: string): number {
  const [am = "", as = ""] = idOf(a).split("-");
  const [bm = "", bs = ""] = idOf(b).split("-");
  return compareDigits(am, bm) || compareDigits(as, bs);
}

/** The id of a position (`1-0@5f3a09c1` → `1-0`); an id is its own. */
export function idOf(position: string): string {
  const at = position.indexOf("@");
  return at < 0 ? position : position.slice(0, at);
}

// Ids may exceed 2^53, so compare them as digit strings (no leading zeros from the server).
function compareDigits(a: string, b: string): number {
  if (a.length !== b.length) return a.length - b.length;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Reads a cursor into a map of channel → position. Malformed parts are skipped. */
export function parseCursor(cursor: string): Map<string, string> {
  const out = new Map<string, string>();
  if (!cursor) return out;
  for (const part of cursor.split(",")) {
    const eq = part.indexOf("=");
    if (eq <= 0) continue;
    const id = part.slice(eq + 1);
    if (/^\d+-\d+(@[0-9a-f]{8})?$/.test(id)) out.set(part.slice(0, eq), id);
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
