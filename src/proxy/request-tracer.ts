import type { FastifyRequest } from 'fastify'
import type { Exchange } from './exchange.js'
import type { RequestRecord } from './request-record.js'

/** Where the request's traced spans hang on its response, from the first hook on (see request-record.ts). */
export const kTrace = Symbol('portico.trace')

/**
 * What the proxy asks of tracing (OpenTelemetry lives in observability/, above the proxy): a span per request and
 * one per upstream attempt. Without a tracer none of this runs.
 */
export interface RequestTracer {
  /** The request's server span, continuing the client's W3C trace or starting one. */
  start(request: FastifyRequest): TracedRequest
}

export interface TracedRequest {
  readonly traceId: string
  /** Starts the span of the exchange's attempt under way; returns the `traceparent` its upstream gets. */
  attemptStarted(ex: Exchange): string
  /** Ends the attempt's span: its status code, or none (it failed), and whether it failed. */
  attemptEnded(statusCode: number | undefined, failed: boolean): void
  /** Ends the request's span with what the access log says of it. */
  ended(record: RequestRecord, ex: Exchange | undefined): void
}
