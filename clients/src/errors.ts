// Errors the client reports.

/** A request to the tidings server failed. */
export class TidingsError extends Error {
  /** HTTP status, when the server answered. */
  readonly status: number | undefined;
  /** The server's error code (`invalid_channel`, `unauthenticated`, `forbidden`, …), when it sent one. */
  readonly code: string | undefined;
  /**
   * How long the server asked us to wait before trying again, in seconds: its `Retry-After`
   * header, when it sent one (a 503 `node_full` or 429 `too_many_connections` on a refused
   * stream, a 429 or 503 from `history()`). An HTTP date is turned into the seconds left until
   * it; a header that is neither is ignored.
   *
   * The client's next reconnect waits at least this long (the larger of its backoff delay and
   * this), so a full node is not hammered. Only the fetch transport and `history()` can see it:
   * browsers show an EventSource neither the status nor the headers of a refused stream, and
   * Node's `eventsource` package reports only the status, so with the EventSource transport this
   * is always `undefined` and the client retries with its plain backoff.
   */
  readonly retryAfter: number | undefined;
  readonly #permanent: boolean | undefined;

  constructor(
    message: string,
    options: { status?: number; code?: string; retryAfter?: number; cause?: unknown; permanent?: boolean } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "TidingsError";
    this.status = options.status;
    this.code = options.code;
    this.retryAfter = options.retryAfter;
    this.#permanent = options.permanent;
  }

  /**
   * True for answers that cannot change when the same request is retried: the client then stops
   * retrying until the subscriptions change. By status: a 4xx other than 401 (a `token` or
   * `headers` function may supply a fresh credential), 408 and 429; so a 403 (the credential does
   * not allow these channels) is permanent. The client also marks a 401 permanent when it has no
   * function to fetch a new credential with (no token, or a fixed `token` string).
   */
  get permanent(): boolean {
    if (this.#permanent !== undefined) return this.#permanent;
    const s = this.status;
    return s !== undefined && s >= 400 && s < 500 && ![401, 408, 429].includes(s);
  }

  /**
   * Builds an error from the server's JSON error body as a WebSocket `error` frame carries it
   * (`{"status", "error", "message", …}`).
   */
  static fromBody(body: Record<string, unknown>): TidingsError {
    const status = typeof body["status"] === "number" ? body["status"] : undefined;
    const code = typeof body["error"] === "string" ? body["error"] : undefined;
    const message = typeof body["message"] === "string" ? body["message"] : "the server refused the request";
    return new TidingsError(status === undefined ? message : `${status}: ${message}`, {
      ...(status === undefined ? {} : { status }),
      ...(code === undefined ? {} : { code }),
    });
  }

  /**
   * Builds an error from a non-2xx response, reading the server's JSON error body and its
   * `Retry-After` header.
   */
  static async fromResponse(response: Response): Promise<TidingsError> {
    let code: string | undefined;
    let message = `${response.status} ${response.statusText}`.trim();
    try {
      const body: unknown = await response.json();
      if (body && typeof body === "object") {
        const b = body as { error?: unknown; message?: unknown };
        if (typeof b.error === "string") code = b.error;
        if (typeof b.message === "string") message = `${response.status}: ${b.message}`;
      }
    } catch {
      // not JSON: keep the status line
    }
    const retryAfter = parseRetryAfter(response.headers.get("retry-after"));
    return new TidingsError(message, {
      status: response.status,
      ...(code === undefined ? {} : { code }),
      ...(retryAfter === undefined ? {} : { retryAfter }),
    });
  }
}

const MONTH = "(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)";
const TIME = "\\d{2}:\\d{2}:\\d{2}";
// The three forms of an HTTP date (RFC 9110, section 5.6.7): IMF-fixdate, RFC 850, asctime.
const IMF_FIXDATE = new RegExp(`^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \\d{2} ${MONTH} \\d{4} ${TIME} GMT$`);
const RFC_850 = new RegExp(`^(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day, \\d{2}-${MONTH}-\\d{2} ${TIME} GMT$`);
const ASCTIME = new RegExp(`^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) ${MONTH} [ \\d]\\d ${TIME} \\d{4}$`);

/**
 * The seconds a `Retry-After` header value asks for: a non-negative integer of seconds, or an
 * HTTP date (the seconds from `now` until it, rounded up; 0 when it has passed). `undefined` for
 * a missing header or anything else.
 */
export function parseRetryAfter(value: string | null | undefined, now: number = Date.now()): number | undefined {
  if (value == null) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) {
    const seconds = Number(v);
    return Number.isSafeInteger(seconds) ? seconds : undefined;
  }
  let at = Number.NaN;
  if (IMF_FIXDATE.test(v) || RFC_850.test(v)) at = Date.parse(v);
  else if (ASCTIME.test(v)) at = Date.parse(`${v} GMT`);
  if (!Number.isFinite(at)) return undefined;
  return Math.max(0, Math.ceil((at - now) / 1000));
}
