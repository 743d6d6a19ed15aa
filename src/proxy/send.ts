import type { FastifyReply, FastifyRequest } from 'fastify'
import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerResponse } from 'node:http'
import { sendProblem } from '../http/problem-responses.js'
import { GatewayError } from '../kernel/errors.js'
import { classifyUpstreamFailure, isClientFault } from '../kernel/upstream-errors.js'
import type { AttemptHandler, BodySink, PolicyExchange, UpstreamBody, UpstreamResponse } from '../policies/policy.js'
import { exchangeOf, type Exchange } from './exchange.js'
import { clientPathOf } from '../config/route-table.js'
import { clientResponseHeaders } from './forwarding-headers.js'
import { kAttemptSignal, type AttemptSignal } from './upstream-dispatcher.js'

/** The header that tells the upstream how long the gateway still waits for it (like Envoy's expected-rq-timeout). */
const TIMEOUT_HEADER = 'x-portico-timeout-ms'

/**
 * Sends one attempt through reply-from; the outcome goes to `handler`. The route's one options object carries
 * module-level hooks that find the request's Exchange, so nothing is allocated per attempt.
 */
export function sendViaReplyFrom(ex: PolicyExchange, handler: AttemptHandler): void {
  const exchange = ex as Exchange
  exchange.startAttempt(handler)
  if (exchange.bodyFault) return void exchange.fail(exchange.takeHandler() as AttemptHandler, exchange.bodyFault)
  if (exchange.body !== undefined) exchange.request.body = exchange.nextAttemptBody()
  const options = exchange.route.replyOptions as { timeout: number }
  try {
    // The path only: reply-from decodes it to check it, and takes the query from the raw URL untouched.
    exchange.reply.from(exchange.upstreamPath, exchange.timeoutMs === options.timeout ? options : { ...options, timeout: exchange.timeoutMs })
  } catch (error) {
    // reply-from throws before anything is sent: for a path it will not send (the request path refuses those first,
    // see engineCanSend; this is the net under it), or an instance address no URL can be made of. A retry sends from a
    // timer, where a throw would take the process down: the attempt fails instead, a path as the client's fault.
    const handler = exchange.takeHandler()
    const path = error instanceof URIError || (error as { statusCode?: number }).statusCode === 400
    if (handler) exchange.fail(handler, path ? unsendablePath(exchange.upstreamPath, error) : (error as Error))
  }
}

/**
 * Whether reply-from will send this upstream path. It refuses (buildURL, against path traversal) a path whose decoded
 * form has `..` at either edge of a segment — `/...`, `/..;/`, `/x../` — and one that does not decode (`%C3%28`), though
 * neither is a dot segment once normalised. Asked before any policy runs, so such a request is a 400 that no limit,
 * breaker or outlier detector hears of.
 */
export function engineCanSend(path: string): boolean {
  if (!path.includes('..') && !path.includes('%')) return true
  let decoded: string
  try {
    decoded = decodeURIComponent(path)
  } catch {
    return false
  }
  return !(decoded === '..' || decoded.includes('/..') || decoded.includes('../'))
}

export function unsendablePath(path: string, cause?: unknown): GatewayError {
  return new GatewayError('bad_path', `The path ${JSON.stringify(path)} cannot be passed on: a segment begins or ends with "..", or an escape is not UTF-8`, { cause })
}

/** The end of every route's chain: the upstream's answer goes to the client, a failure as problem+json. */
export const deliver: AttemptHandler = {
  onResponse(policyEx, res) {
    const ex = policyEx as Exchange
    if (res.statusCode !== 304) {
      ex.answering()
      return res.stream.pipeTo(new AnswerWriter(ex, res.stream))
    }
    // A 304 has no body, and its Content-Length (legal: the size of the representation) makes undici fail the
    // empty body with a length mismatch: it goes out bodiless, and the body is dropped.
    res.stream.pipeTo(DROPPED)
    ex.reply.send()
  },
  onError(policyEx, error) {
    const ex = policyEx as Exchange
    if (ex.clientGone || ex.reply.sent) return
    const { route, settings } = ex
    const failure = classifyUpstreamFailure(error, ex.instance.origin, route.timeout)
    if (!(error instanceof GatewayError)) settings.logger.warn({ requestId: ex.request.id, route: route.name, instance: ex.instance.origin, code: failure.code, err: error }, failure.message)
    sendProblem(ex.reply, failure)
  },
}

/**
 * The upstream's answer goes to node's response as it comes: the head (one `writeHead` with what reply-from and the
 * policies put on the reply) with the body's first chunk, then each chunk, the body paused while the client's side is
 * full. fastify's `reply.send(stream)` does the same with more work per request (a content-type parse, the onSend
 * runner, a `setHeader` per header, two `finished()` watchers and a pipe's listeners). Until the first chunk nothing
 * is out: a body that fails before it (a broken chunk size) is a 502 problem through fastify, not a cut connection.
 */
class AnswerWriter implements BodySink {
  readonly #ex: Exchange
  readonly #body: UpstreamBody

  constructor(ex: Exchange, body: UpstreamBody) {
    this.#ex = ex
    this.#body = body
  }

  data(chunk: Buffer): void {
    const ex = this.#ex
    const res = ex.reply.raw as Answer
    // The client left (an HTTP/2 answer has no `destroyed`: its exchange hears the reset): the upstream request is given up.
    if (ex.clientGone || res.destroyed) return this.#body.destroy()
    if (!this.#headOut()) return
    if (res.write(chunk)) return
    ex.watchTransfer()
    this.#body.pause()
    res[kBody] = this.#body
    res.once('drain', onAnswerDrain)
  }

  end(): void {
    if (this.#headOut()) this.#ex.reply.raw.end()
  }

  error(error: Error): void {
    const ex = this.#ex
    // Part of the answer is out: the client can only be told by a cut connection (ending it would make it look whole).
    if (ex.reply.raw.headersSent) return void ex.reply.raw.destroy(error)
    deliver.onError(ex, error)
  }

  /** Writes the head, once; false when node refuses it (a header value it will not send): the client gets a 502. */
  #headOut(): boolean {
    const { reply } = this.#ex
    if (reply.raw.headersSent) return true
    try {
      reply.raw.writeHead(reply.statusCode, reply.getHeaders() as OutgoingHttpHeaders)
    } catch (error) {
      this.#body.destroy()
      sendProblem(reply, new GatewayError('upstream_bad_response', `The upstream's response headers cannot be passed on (${(error as Error).message})`))
      return false
    }
    reply.hijack()
    return true
  }
}

const kBody = Symbol('portico.answerBody')
type Answer = ServerResponse & { [kBody]?: UpstreamBody }

function onAnswerDrain(this: Answer): void {
  this[kBody]?.resume()
}

const noop = (): void => undefined
/** A body nobody reads: taken off the connection and dropped. */
const DROPPED: BodySink = { data: noop, end: noop, error: noop }

/**
 * reply-from's options for a route. reply-from retries a GET answered 503 up to 10 times on its own (and
 * `maxRetriesOn503: 0` means 10): a retry policy that never asks for one turns that off; retries are the route's
 * `retry` policy's business.
 */
export function replyOptionsFor(responseTimeoutMs: number): object {
  return { getUpstream, rewriteRequestHeaders, rewriteHeaders, onResponse, onError, retryDelay: noRetry, timeout: responseTimeoutMs }
}

function getUpstream(request: FastifyRequest): string {
  return exchangeOf(request).instance.origin
}

function rewriteRequestHeaders(request: FastifyRequest, headers: IncomingHttpHeaders): IncomingHttpHeaders {
  const ex = exchangeOf(request)
  const forwarded = ex.withForwarding(headers) as IncomingHttpHeaders & {
    [kAttemptSignal]?: AttemptSignal
  }
  forwarded[TIMEOUT_HEADER] = String(ex.timeoutMs)
  // Traced: the upstream continues the request's trace, under this attempt's span.
  if (ex.traceparent !== undefined) forwarded.traceparent = ex.traceparent
  forwarded[kAttemptSignal] = ex.signal
  return forwarded
}

function rewriteHeaders(headers: IncomingHttpHeaders, request: FastifyRequest): IncomingHttpHeaders {
  const forwarded = clientResponseHeaders(headers, request)
  if (typeof forwarded.location === 'string') forwarded.location = clientLocation(forwarded.location, exchangeOf(request))
  return forwarded
}

/**
 * A Location as the client must see it: never the instance's own address (nginx's proxy_redirect), and with the
 * route's prefix rewrite undone. Other origins pass untouched.
 */
function clientLocation(location: string, ex: Exchange): string {
  const origin = ex.instance.origin
  const path = location.toLowerCase().startsWith(origin.toLowerCase()) && /^($|[/?#])/.test(location.slice(origin.length)) ? location.slice(origin.length) || '/' : location
  if (!path.startsWith('/') || path.startsWith('//')) return path
  const end = path.search(/[?#]/)
  return end === -1 ? clientPathOf(path, ex.route) : clientPathOf(path.slice(0, end), ex.route) + path.slice(end)
}

function onResponse(request: FastifyRequest, _reply: FastifyReply, res: UpstreamResponse): void {
  const ex = exchangeOf(request)
  const handler = ex.takeHandler(res.statusCode >= 500, res.statusCode)
  if (handler) ex.respond(handler, res)
  else ex.discard(res) // the attempt already ended (timed out, or its client went away)
}

function onError(reply: FastifyReply, { error }: { error: Error }): void {
  const ex = exchangeOf(reply.request)
  const handler = ex.takeHandler(isClientFault(error) ? undefined : true)
  if (handler) ex.fail(handler, error)
}

const noRetry = (): null => null
