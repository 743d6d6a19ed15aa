import type { FastifyRequest } from 'fastify'
import type { RequestValue } from '../policies/policy.js'
import type { RequestRecord } from './request-record.js'

/** What tracing reads of a request's exchange (the proxy's Exchange is one). */
export interface TracedExchange {
  readonly request: { readonly method: string }
  readonly route: { readonly name: string; readonly prefix: string }
  readonly instance: { readonly origin: string }
  readonly upstreamUrl: string
  readonly attempt: number
  /** A policy redacted a credential from the client's URL: the record's `path` is the URL to show. */
  readonly urlRedacted: boolean
  shownValues(): Iterable<[RequestValue<string | number | boolean>, string | number | boolean]>
}

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
  attemptStarted(ex: TracedExchange): string
  /** Ends the attempt's span: its status code, or none (it failed), and whether it failed. */
  attemptEnded(statusCode: number | undefined, failed: boolean): void
  /** Ends the request's span with what the access log says of it. */
  ended(record: RequestRecord, ex: TracedExchange | undefined): void
}
