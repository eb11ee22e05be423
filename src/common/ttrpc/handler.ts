/**
 * The contract between the ttrpc server and service implementations. Kept apart from the server
 * so that per-connection code and services can depend on it without depending on each other.
 */

export interface CallContext {
  service: string;
  method: string;
  /** Request metadata; a key sent several times keeps every value, in order. */
  metadata: ReadonlyMap<string, readonly string[]>;
  /** absolute deadline in ms since epoch from timeout_nano, undefined if none */
  deadline: number | undefined;
  /**
   * aborted when the deadline passes or the connection closes. The reason is a ShimError
   * (DeadlineExceeded or Unavailable), so a handler may rethrow it. It is not aborted after the
   * handler has settled: a normal completion is not a cancellation.
   */
  signal: AbortSignal;
}

/** Returns the encoded response message (may be empty). Throw ShimError for an error status. */
export type UnaryHandler = (payload: Buffer, ctx: CallContext) => Promise<Uint8Array>;
