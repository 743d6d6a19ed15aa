import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { problemCodeOf } from '../http/problem-responses.js'
import { kExchange, type Exchange } from './exchange.js'
import { kTrace, type RequestTracer, type TracedRequest } from './request-tracer.js'

/** One request as the access log and the metrics see it, once its response has ended (sent, or the client gone). */
export interface RequestRecord {
  readonly requestId: string
  /** W3C trace id: the request's span's when tracing is on, else the client's `traceparent`'s, if it sent one. */
  readonly traceId: string | undefined
  readonly client: string
  readonly method: string
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
  /** Policies' values shown in the access log (RequestValue's `logField`), e.g. `cache`: what the route's cache did. */
  readonly [logField: string]: string | number | boolean | undefined
}

const kReply = Symbol('portico.recordedReply')
const kSocket = Symbol('portico.recordedSocket')
const kBytesBefore = Symbol('portico.bytesBefore')
type RecordedResponse = ServerResponse & { [kReply]?: FastifyReply; [kSocket]?: Socket | null; [kBytesBefore]?: number; [kExchange]?: Exchange; [kTrace]?: TracedRequest }

/**
 * Calls `onEnd` once per request the app receives, when its response closes, however it ended; with a tracer, the
 * request's span starts with it and ends then.
 */
export function recordRequests(app: FastifyInstance, onEnd: ((record: RequestRecord) => void) | undefined, tracer: RequestTracer | undefined): void {
  function onClose(this: RecordedResponse): void {
    const reply = this[kReply]
    if (!reply) return
    const record = recordOf(reply, this)
    this[kTrace]?.ended(record, this[kExchange])
    onEnd?.(record)
  }
  app.addHook('onRequest', (request: FastifyRequest, reply: FastifyReply, done: () => void) => {
    const res = reply.raw as RecordedResponse
    // The response lets go of its socket when it finishes; the bytes it wrote are read from the socket then.
    const socket = res.socket
    res[kReply] = reply
    res[kSocket] = socket
    res[kBytesBefore] = socket?.bytesWritten ?? 0
    if (tracer) res[kTrace] = tracer.start(request)
    res.on('close', onClose)
    done()
  })
}

function recordOf(reply: FastifyReply, res: RecordedResponse): RequestRecord {
  const { request } = reply
  const ex = res[kExchange]
  const length = request.headers['content-length']
  const before = res[kBytesBefore] ?? 0
  const record: Record<string, string | number | boolean | undefined> = {
    requestId: request.id,
    traceId: res[kTrace]?.traceId ?? traceIdOf(request.headers.traceparent),
    client: request.ip,
    method: request.method,
    path: request.originalUrl,
    upstreamPath: ex?.upstreamUrl,
    route: ex?.route.name ?? '-',
    instance: ex === undefined || ex.attempt === 0 ? undefined : ex.instance.origin,
    attempts: ex?.attempt ?? 0,
    status: res.writableFinished || res.headersSent ? res.statusCode : 499,
    code: problemCodeOf(reply),
    bytesIn: length === undefined ? (ex?.bodyBytes() ?? 0) : Number(length) || 0,
    bytesOut: (res[kSocket]?.bytesWritten ?? before) - before,
    durationMs: reply.elapsedTime,
    upstreamMs: ex?.upstreamMs,
    clientGone: !res.writableFinished,
  }
  if (ex) for (const [key, value] of ex.shownValues()) if (key.shown.logField !== undefined) record[key.shown.logField] = value
  return record as RequestRecord
}

const TRACEPARENT = /^[\da-f]{2}-([\da-f]{32})-[\da-f]{16}-[\da-f]{2}$/

function traceIdOf(traceparent: string | string[] | undefined): string | undefined {
  if (typeof traceparent !== 'string') return undefined
  return TRACEPARENT.exec(traceparent)?.[1]
}
