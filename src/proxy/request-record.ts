/** One request as the access log and the metrics see it, once its response has ended (sent, or the client gone). */
export interface RequestRecord {
  readonly requestId: string
  /** W3C trace id: the request's span's when tracing is on, else the client's `traceparent`'s, if it sent one. */
  readonly traceId: string | undefined
  readonly client: string
  readonly method: string
  /** What the client spoke: HTTP/1.1, HTTP/2 or HTTP/1.0. */
  readonly protocol: string
  /** The path and query as the client sent them. */
  readonly path: string
  /** What the upstream was asked for (prefix rewritten), when a route matched. */
  readonly upstreamPath: string | undefined
  /** The route's name, or `-` when none matched. */
  readonly route: string
  /** The instance of the last attempt. */
  readonly instance: string | undefined
  readonly attempts: number
  /** The status sent; 499 when the client left before any (nginx's convention). */
  readonly status: number
  /** The problem code when the gateway answered itself. */
  readonly code: string | undefined
  readonly bytesIn: number
  /** Bytes written to the client's connection while the request was served (headers included). */
  readonly bytesOut: number
  readonly durationMs: number
  /** Time spent waiting for upstream answers (every attempt, up to its response headers). */
  readonly upstreamMs: number | undefined
  /** The client went away before the response had been sent whole. */
  readonly clientGone: boolean
  /** Policies' values shown in the access log, under their RequestValue's `logField`. */
  readonly [logField: string]: string | number | boolean | undefined
}
