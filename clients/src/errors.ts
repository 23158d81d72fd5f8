// Errors the client reports.

/** A request to the tidings server failed. */
export class TidingsError extends Error {
  /** HTTP status, when the server answered. */
  readonly status: number | undefined;
  /** The server's error code (`invalid_channel`, `unauthenticated`, `forbidden`, …), when it sent one. */
  readonly code: string | undefined;
  readonly #permanent: boolean | undefined;

  constructor(
    message: string,
    options: { status?: number; code?: string; cause?: unknown; permanent?: boolean } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "TidingsError";
    this.status = options.status;
    this.code = options.code;
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

  /** Builds an error from a non-2xx response, reading the server's JSON error body. */
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
    return new TidingsError(message, { status: response.status, ...(code === undefined ? {} : { code }) });
  }
}
