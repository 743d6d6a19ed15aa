import { ROOT_CONTEXT, SpanKind, SpanStatusCode, TraceFlags, trace, type Context, type Span, type Tracer } from '@opentelemetry/api'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http'
import { detectResources, envDetector, resourceFromAttributes } from '@opentelemetry/resources'
import { BasicTracerProvider, BatchSpanProcessor } from '@opentelemetry/sdk-trace-base'
import {
  ATTR_CLIENT_ADDRESS,
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_REQUEST_RESEND_COUNT,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_HTTP_ROUTE,
  ATTR_SERVER_ADDRESS,
  ATTR_SERVER_PORT,
  ATTR_SERVICE_NAME,
  ATTR_URL_FULL,
  ATTR_URL_PATH,
  ATTR_URL_QUERY,
  ATTR_USER_AGENT_ORIGINAL,
} from '@opentelemetry/semantic-conventions'
import type { FastifyRequest } from 'fastify'
import type { Logger } from '../kernel/logger.js'
import type { RequestRecord } from '../proxy/request-record.js'
import type { RequestTracer, TracedExchange, TracedRequest } from '../proxy/request-tracer.js'

type Env = Readonly<Record<string, string | undefined>>

export interface Tracing {
  readonly tracer: RequestTracer
  /** Exports what is still queued (bounded by the exporter's timeout) and stops. */
  shutdown(): Promise<void>
}

/**
 * OpenTelemetry tracing, configured only by the standard variables: on when OTEL_TRACES_EXPORTER is `otlp`, or when
 * an OTLP endpoint is set and no other exporter is named; off with OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none.
 * Spans go over OTLP/HTTP (JSON) in batches from a bounded queue: a dead collector costs dropped spans, never a slower
 * or failed request. No global context manager: spans are handed from the request to its attempts explicitly.
 */
export function createTracing(env: Env, logger: Logger, version: string): Tracing | undefined {
  if (!tracingWanted(env, logger)) return undefined
  if (env.OTEL_EXPORTER_OTLP_PROTOCOL && env.OTEL_EXPORTER_OTLP_PROTOCOL !== 'http/json') {
    logger.warn({ protocol: env.OTEL_EXPORTER_OTLP_PROTOCOL }, 'OTEL_EXPORTER_OTLP_PROTOCOL: Portico exports OTLP over HTTP as JSON (http/json)')
  }
  const resource = resourceFromAttributes({ [ATTR_SERVICE_NAME]: 'portico', 'service.version': version }).merge(detectResources({ detectors: [envDetector] }))
  const provider = new BasicTracerProvider({ resource, spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter())] })
  const tracer = provider.getTracer('portico', version)
  const propagator = new W3CTraceContextPropagator()
  logger.info({ endpoint: env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? env.OTEL_EXPORTER_OTLP_ENDPOINT ?? 'http://localhost:4318' }, 'tracing: exporting spans over OTLP/HTTP')
  return {
    tracer: { start: (request) => new RequestSpans(tracer, propagator, request) },
    shutdown: () => provider.shutdown().catch((error: unknown) => logger.warn({ err: error }, 'tracing: spans lost at shutdown')),
  }
}

function tracingWanted(env: Env, logger: Logger): boolean {
  if (env.OTEL_SDK_DISABLED === 'true') return false
  const exporters = (env.OTEL_TRACES_EXPORTER ?? '').split(',').map((e) => e.trim()).filter(Boolean)
  if (exporters.length === 0) return Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
  const unsupported = exporters.filter((e) => e !== 'otlp' && e !== 'none')
  if (unsupported.length > 0) logger.warn({ exporters: unsupported }, 'OTEL_TRACES_EXPORTER: only otlp is supported; the others are ignored')
  return exporters.includes('otlp')
}

const headerGetter = {
  keys: (carrier: FastifyRequest['headers']) => Object.keys(carrier),
  get: (carrier: FastifyRequest['headers'], key: string) => carrier[key],
}

/** One request's spans: the server span, and the span of the attempt under way. */
class RequestSpans implements TracedRequest {
  readonly traceId: string
  readonly #tracer: Tracer
  readonly #span: Span
  #attempt: Span | undefined = undefined
  /** The server span as its attempts' parent: made at the first sampled attempt. */
  #context: Context | undefined = undefined

  constructor(tracer: Tracer, propagator: W3CTraceContextPropagator, request: FastifyRequest) {
    this.#tracer = tracer
    const parent = propagator.extract(ROOT_CONTEXT, request.headers, headerGetter)
    // Attributes once the sampler has decided (OTEL_TRACES_SAMPLER's samplers decide on the trace id and the parent):
    // an unsampled request, most of them with a ratio, builds none.
    const span = tracer.startSpan(request.method, SERVER_SPAN, parent)
    this.#span = span
    this.traceId = span.spanContext().traceId
    if (!span.isRecording()) return
    const url = request.url
    const queryAt = url.indexOf('?')
    span.setAttribute(ATTR_HTTP_REQUEST_METHOD, request.method)
    span.setAttribute(ATTR_URL_PATH, queryAt === -1 ? url : url.slice(0, queryAt))
    if (queryAt !== -1) span.setAttribute(ATTR_URL_QUERY, url.slice(queryAt + 1))
    span.setAttribute(ATTR_CLIENT_ADDRESS, request.ip)
    const userAgent = request.headers['user-agent']
    if (userAgent) span.setAttribute(ATTR_USER_AGENT_ORIGINAL, userAgent)
  }

  attemptStarted(ex: TracedExchange): string {
    this.#attempt?.end()
    // An unsampled request's attempts are unsampled too (the samplers are parent-based): no span, the upstream
    // continues the trace under the request's own span id.
    if (!this.#span.isRecording()) {
      const { traceId, spanId } = this.#span.spanContext()
      return `00-${traceId}-${spanId}-00`
    }
    this.#attempt = this.#tracer.startSpan(`${ex.request.method} ${ex.route.name}`, { kind: SpanKind.CLIENT, attributes: attemptAttributes(ex) }, (this.#context ??= trace.setSpan(ROOT_CONTEXT, this.#span)))
    // W3C's traceparent as the propagator writes it (version 00), without a carrier and a context per attempt.
    const { traceId, spanId, traceFlags } = this.#attempt.spanContext()
    return `00-${traceId}-${spanId}-${traceFlags & TraceFlags.SAMPLED ? '01' : '00'}`
  }

  attemptEnded(statusCode: number | undefined, failed: boolean): void {
    const span = this.#attempt
    if (!span) return
    this.#attempt = undefined
    if (statusCode !== undefined) span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, statusCode)
    if (failed) span.setStatus({ code: SpanStatusCode.ERROR, message: statusCode === undefined ? 'no response' : `status ${statusCode}` })
    span.end()
  }

  ended(record: RequestRecord, ex: TracedExchange | undefined): void {
    this.attemptEnded(undefined, false)
    const span = this.#span
    if (!span.isRecording()) return span.end()
    if (ex) {
      span.updateName(`${record.method} ${ex.route.prefix}`)
      span.setAttribute(ATTR_HTTP_ROUTE, ex.route.prefix)
      for (const [key, value] of ex.shownValues()) if (key.shown.spanAttribute !== undefined) span.setAttribute(key.shown.spanAttribute, value)
      if (ex.urlRedacted) span.setAttribute(ATTR_URL_QUERY, record.path.split('?')[1] ?? '')
    }
    span.setAttribute('portico.route', record.route)
    if (record.instance) span.setAttribute('portico.instance', record.instance)
    span.setAttribute('portico.attempt', record.attempts)
    span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, record.status)
    if (record.code) span.setAttribute('portico.problem_code', record.code)
    if (record.clientGone) span.setAttribute('portico.client_gone', true)
    if (record.status >= 500) span.setStatus({ code: SpanStatusCode.ERROR, message: record.code ?? `status ${record.status}` })
    span.end()
  }
}

const SERVER_SPAN = { kind: SpanKind.SERVER }

function attemptAttributes(ex: TracedExchange): Record<string, string | number> {
  const attributes: Record<string, string | number> = {
    [ATTR_HTTP_REQUEST_METHOD]: ex.request.method,
    'portico.route': ex.route.name,
    'portico.instance': ex.instance.origin,
    'portico.attempt': ex.attempt,
  }
  const server = serverOf(ex.instance)
  attributes[ATTR_URL_FULL] = (server?.origin ?? ex.instance.origin) + ex.upstreamUrl
  if (server !== undefined) {
    attributes[ATTR_SERVER_ADDRESS] = server.address
    attributes[ATTR_SERVER_PORT] = server.port
  }
  if (ex.attempt > 1) attributes[ATTR_HTTP_REQUEST_RESEND_COUNT] = ex.attempt - 1
  return attributes
}

interface Server {
  /** The origin as URL writes it (no trailing slash, no default port). */
  readonly origin: string
  readonly address: string
  readonly port: number
}

const servers = new WeakMap<object, Server | undefined>()

/** An instance's host and port, parsed once; undefined for an address URL cannot parse (its attempts fail as 502s). */
function serverOf(instance: TracedExchange['instance']): Server | undefined {
  if (servers.has(instance)) return servers.get(instance)
  let server: Server | undefined
  try {
    const url = new URL(instance.origin)
    server = { origin: url.origin, address: url.hostname, port: Number(url.port || (url.protocol === 'https:' ? 443 : 80)) }
  } catch {
    server = undefined
  }
  servers.set(instance, server)
  return server
}
