// Errors the client reports.

/** A request to the tidings server failed. */
export class TidingsError extends Error {
  /** HTTP status, when the server answered. */
  readonly status: number | undefined;
  /** The server's error code (`invalid_channel`, …), when it sent one. */
  readonly code: string | undefined;

  constructor(message: string, options: { status?: number; code?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "TidingsError";
    this.status = options.status;
    this.code = options.code;
  }

  /**
   * True for answers that cannot change when the same request is retried: a 4xx other than 401
   * and 403 (credentials may be refreshed by a `headers` function), 408 and 429.
   */
  get permanent(): boolean {
    const s = this.status;
    return s !== undefined && s >= 400 && s < 500 && ![401, 403, 408, 429].includes(s);
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
