import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { problemCodeOf } from '../http/problem-responses.js'
import { exchangeOfResponse, type Exchange } from './exchange.js'
import type { RequestRecord } from './request-record.js'
import type { RequestTracer, TracedRequest } from './request-tracer.js'

const kReply = Symbol('portico.recordedReply')
const kSocket = Symbol('portico.recordedSocket')
const kBytesBefore = Symbol('portico.bytesBefore')
const kTrace = Symbol('portico.trace')
type EndingResponse = ServerResponse & { [kReply]?: FastifyReply; [kSocket]?: Socket | null; [kBytesBefore]?: number; [kTrace]?: TracedRequest }

/**
 * The way back of every request the app receives, in the order it runs, from the one 'close' of its response (sent
 * whole, or the client gone): the record is made, the request's span ends with it, `onEnd` gets it (access log,
 * metrics), then the exchange ends (its cleanups, the upstream attempt of a client that left). With a tracer, the
 * request's span starts with the request.
 */
export function endRequests(app: FastifyInstance, onEnd: ((record: RequestRecord) => void) | undefined, tracer: RequestTracer | undefined): void {
  function onClose(this: EndingResponse): void {
    const reply = this[kReply]
    if (!reply) return
    const ex = exchangeOfResponse(this)
    if (onEnd || this[kTrace]) {
      const record = recordOf(reply, this, ex)
      this[kTrace]?.ended(record, ex)
      onEnd?.(record)
    }
    ex?.end(!answeredWhole(this))
  }
  app.addHook('onRequest', (request: FastifyRequest, reply: FastifyReply, done: () => void) => {
    const res = reply.raw as EndingResponse
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

/**
 * The answer went out whole. `writableFinished` alone says so over HTTP/1.1; an HTTP/2 stream the client reset says
 * finished too (its writable side is done, destroyed) without ever having been ended.
 */
function answeredWhole(res: ServerResponse): boolean {
  return res.writableFinished && res.writableEnded
}

/** The request's spans, when tracing is on. */
export function traceOf(reply: FastifyReply): TracedRequest | undefined {
  return (reply.raw as EndingResponse)[kTrace]
}

function recordOf(reply: FastifyReply, res: EndingResponse, ex: Exchange | undefined): RequestRecord {
  const { request } = reply
  const length = request.headers['content-length']
  const before = res[kBytesBefore] ?? 0
  const record: Record<string, string | number | boolean | undefined> = {
    requestId: request.id,
    traceId: res[kTrace]?.traceId ?? traceIdOf(request.headers.traceparent),
    client: request.ip,
    method: request.method,
    protocol: protocolOf(request.raw.httpVersion),
    path: ex === undefined ? request.originalUrl : ex.clientUrl(request.originalUrl),
    upstreamPath: ex?.upstreamUrl,
    route: ex?.route.name ?? '-',
    instance: ex === undefined || ex.attempt === 0 ? undefined : ex.instance.origin,
    attempts: ex?.attempt ?? 0,
    status: answeredWhole(res) || res.headersSent ? res.statusCode : 499,
    code: problemCodeOf(reply),
    bytesIn: length === undefined ? (ex?.bodyBytes() ?? 0) : Number(length) || 0,
    bytesOut: (res[kSocket]?.bytesWritten ?? before) - before,
    durationMs: reply.elapsedTime,
    upstreamMs: ex?.upstreamMs,
    clientGone: !answeredWhole(res),
  }
  if (ex) for (const [key, value] of ex.shownValues()) if (key.shown.logField !== undefined) record[key.shown.logField] = value
  return record as RequestRecord
}

function protocolOf(version: string): string {
  return version === '1.1' ? 'HTTP/1.1' : version === '2.0' ? 'HTTP/2' : `HTTP/${version}`
}

const TRACEPARENT = /^[\da-f]{2}-([\da-f]{32})-[\da-f]{16}-[\da-f]{2}$/

function traceIdOf(traceparent: string | string[] | undefined): string | undefined {
  if (typeof traceparent !== 'string') return undefined
  return TRACEPARENT.exec(traceparent)?.[1]
}
