import type { FastifyReply, FastifyRequest } from 'fastify'
import type { IncomingHttpHeaders, ServerResponse } from 'node:http'
import type { Readable } from 'node:stream'
import type { InFlight, Pick } from '../balancer/balancer.js'
import type { Instance } from '../balancer/instance.js'
import { readRequestKey } from '../balancer/request-key.js'
import type { RouteDefinition, TargetDefinition } from '../config/parse-route-file.js'
import { GatewayError } from '../kernel/errors.js'
import { CLIENT_BAD_BODY, CLIENT_GONE, RESPONSE_TIMEOUT } from '../kernel/upstream-errors.js'
import { sendProblem } from '../http/problem-responses.js'
import { RequestValue, type AttemptHandler, type BodyCopy as PolicyBodyCopy, type PolicyExchange, type RequestGuard, type Send, type UpstreamResponse } from '../policies/policy.js'
import type { KeyedPolicy } from '../policies/policy-registry.js'
import type { Logger } from '../kernel/logger.js'
import { AttemptBody, BodyCopy } from './attempt-body.js'
import { upstreamRequestHeaders } from './forwarding-headers.js'
import type { TracedRequest } from './request-tracer.js'
import type { AttemptStats } from './attempt-stats.js'
import { LimitedBody } from './body-limit.js'
import { AttemptSignal } from './upstream-dispatcher.js'

/** Where a request of a route goes once the route is chosen: the route's one target, or one side of its split. */
export interface LiveTarget extends TargetDefinition {
  readonly pick: Pick
  /** The instances that may get traffic now (discovered, less what the operators and policies hold out). */
  readonly instances: () => readonly Instance[]
  /** Every instance it has now, held-out ones included. */
  readonly discovered: () => readonly Instance[]
  /** A split target's own attempt wrappers (its breaker, outlier detection) around the plain send. */
  readonly send: Send
  /** Set on least-request routes: the counts the balancer reads. */
  readonly inFlight: InFlight | undefined
  /** A split target's own policies (made per target); none on a route without a split (they are the route's). */
  readonly livePolicies: readonly KeyedPolicy[]
  /** Whether it can take a request now: an instance in rotation, and no policy refusing every attempt (an open breaker). */
  available(): boolean
}

/** A route as requests use it: its definition, compiled once per table with its balancers and its policies. */
export interface LiveRoute extends RouteDefinition {
  /** Its one target, or its split's targets in the order of its file. */
  readonly targets: readonly LiveTarget[]
  /** A split route's choice of target for a request (sticky or drawn); null without a split. */
  readonly chooseTarget: ((ex: PolicyExchange) => LiveTarget) | null
  /** The instances that may get traffic now, every target's. */
  readonly instances: () => readonly Instance[]
  /** Every instance the route has now, every target's, held-out ones included. */
  readonly discovered: () => readonly Instance[]
  /** Request guards in order, or null: a route without any goes straight to picking an instance. */
  readonly guards: readonly RequestGuard[] | null
  /** The route's attempt wrappers folded around the plain send (a split's: around its target's); the plain send itself when it has none. */
  readonly send: Send
  /** reply-from's options for this route: built once, the same shape on every route, never copied per request. */
  readonly replyOptions: object
  /** The live policies, under their route-file keys. */
  readonly livePolicies: readonly KeyedPolicy[]
  /** Requests of this route under way now; one object per route name, kept across reloads. */
  readonly active: { count: number }
}

/** What every request of one gateway shares. */
export interface GatewaySettings {
  readonly trustProxy: boolean
  readonly maxBodyBytes: number
  readonly logger: Logger
  readonly attempts: AttemptStats
}

export const kExchange = Symbol('portico.exchange')
export type ExchangeRequest = FastifyRequest & { [kExchange]?: Exchange }
type ExchangeResponse = ServerResponse & { [kExchange]?: Exchange }

const NO_INSTANCE: Instance = Object.freeze({ id: '', origin: '', weight: 0, tags: [], meta: {} })
const CLIENT_GONE_ERROR = Object.assign(new Error('the client went away before the upstream answered'), { code: CLIENT_GONE })
const RESPONSE_TIMEOUT_ERROR = Object.assign(new Error('no response within the attempt\'s timeout'), { code: RESPONSE_TIMEOUT })

/**
 * One request's way through the gateway, one object of fixed shape (every field set here): the route it matched, the
 * instance of the attempt under way and that attempt's link upstream, and what must happen when it ends.
 */
export class Exchange implements PolicyExchange {
  readonly request: ExchangeRequest
  readonly reply: FastifyReply
  readonly route: LiveRoute
  /** The route's target for this request: its only one, or the one its split chose. */
  target: LiveTarget
  readonly settings: GatewaySettings
  /** The path to send upstream (normalised, prefix rewritten). */
  readonly upstreamPath: string
  /** The same with the client's query as it came, or as a guard changed it. */
  upstreamUrl: string
  instance: Instance = NO_INSTANCE
  attempt = 0
  timeoutMs: number
  clientGone = false
  signal: AttemptSignal | undefined = undefined
  /** Where the attempt under way reports; cleared once it has reported, so it reports once. */
  handler: AttemptHandler | undefined = undefined
  /** fastify's pre-handler callback: the guards and the pick end here. */
  readonly proceed: (error?: Error) => void
  /** Guards call this to go on; set only on routes with guards. */
  readonly next: ((error?: Error) => void) | undefined
  guardIndex = 0
  /** The client's request body as the routing step left it (length-limited), when the request has one. */
  body: Readable | undefined = undefined
  /** Set once the client's body broke HTTP's framing midway: no attempt may send it. */
  bodyFault: Error | undefined = undefined
  /** Time spent waiting for upstream answers, every attempt up to its response headers. */
  upstreamMs = 0
  /** The request's spans, when tracing is on. */
  readonly trace: TracedRequest | undefined
  /** The `traceparent` of the attempt under way, when tracing is on. */
  traceparent: string | undefined = undefined
  #attemptBody: AttemptBody | undefined = undefined
  /** Copies of the client's body (a mirror's): fed by whichever attempt reads it. */
  #bodyCopies: BodyCopy[] | undefined = undefined
  #forwardedHeaders: IncomingHttpHeaders | undefined = undefined
  upstreamHeaderChanges: Map<string, string | undefined> | undefined = undefined
  /** Credentials in the client's URL that its log line and span must not show. */
  #redactions: string[] | undefined = undefined
  /** Policies' values by slot (see RequestValue); made on the first set. */
  #values: (string | number | boolean | undefined)[] | undefined = undefined
  #attemptStartedAt = 0
  #attemptClock: NodeJS.Timeout | undefined = undefined
  #transferClock: NodeJS.Timeout | undefined = undefined
  #bytesSent = 0
  #inFlightDone: (() => void) | undefined = undefined
  #cleanups: (() => void)[] | undefined = undefined
  #beforeAnswer: (() => void)[] | undefined = undefined
  #ended = false

  constructor(request: ExchangeRequest, reply: FastifyReply, route: LiveRoute, upstreamPath: string, upstreamUrl: string, settings: GatewaySettings, proceed: (error?: Error) => void, next: ((ex: Exchange, error?: Error) => void) | undefined, trace: TracedRequest | undefined) {
    this.request = request
    this.reply = reply
    this.route = route
    this.target = route.targets[0] as LiveTarget
    this.settings = settings
    this.upstreamPath = upstreamPath
    this.upstreamUrl = upstreamUrl
    this.timeoutMs = route.timeout.responseMs
    this.proceed = proceed
    this.next = next && ((error) => next(this, error))
    request[kExchange] = this
    this.trace = trace
    route.active.count++
    ;(reply.raw as ExchangeResponse)[kExchange] = this
  }

  /** The body for the attempt about to be sent: a fresh view of the client's stream (see AttemptBody). */
  nextAttemptBody(): AttemptBody | undefined {
    if (this.body === undefined) return undefined
    this.#attemptBody = new AttemptBody(this.body, this.#bodyCopies)
    return this.#attemptBody
  }

  /** The body's size as it streamed through the gateway (a chunked one's is known only by counting). */
  bodyBytes(): number {
    return this.body instanceof LimitedBody ? this.body.bytes : 0
  }

  copyBody(): PolicyBodyCopy | undefined {
    if (this.body === undefined) return undefined
    const copy = new BodyCopy()
    ;(this.#bodyCopies ??= []).push(copy)
    this.onEnd(() => copy.abandon())
    return copy
  }

  bodyUntouched(): boolean {
    return this.#attemptBody === undefined || this.#attemptBody.untouched
  }

  /** The consistent-hash key of this request; undefined on other balancers. */
  hashKey(): string | undefined {
    const { route, request } = this
    return route.loadBalancer === 'consistent-hash' ? readRequestKey(route.hashOn, request) : undefined
  }

  forwardedHeaders(): IncomingHttpHeaders {
    // The same function makes what reply-from sends, so the two cannot drift apart.
    return (this.#forwardedHeaders ??= this.withForwarding({ ...this.request.headers }))
  }

  /** `headers` (the client's, as a copy this may change) as they go upstream: the forwarding rules, then the policies' changes. */
  withForwarding(headers: IncomingHttpHeaders): IncomingHttpHeaders {
    const forwarded = upstreamRequestHeaders(this.request, headers, { trustProxy: this.settings.trustProxy, preserveHost: this.route.preserveHost })
    const changes = this.upstreamHeaderChanges
    if (changes !== undefined)
      for (const [name, value] of changes) {
        if (value === undefined) delete forwarded[name]
        else forwarded[name] = value
      }
    return forwarded
  }

  redact(secret: string): void {
    if (secret !== '') (this.#redactions ??= []).push(secret)
  }

  /** Whether a policy redacted part of the client's URL. */
  get urlRedacted(): boolean {
    return this.#redactions !== undefined
  }

  /** The client's URL as the access log and the span may show it: the credentials policies named, redacted. */
  clientUrl(url: string): string {
    let shown = url
    for (const secret of this.#redactions ?? []) shown = shown.split(secret).join('[redacted]')
    return shown
  }

  setUpstreamQuery(query: string | undefined): void {
    this.upstreamUrl = query === undefined || query === '' ? this.upstreamPath : `${this.upstreamPath}?${query}`
  }

  setUpstreamHeader(name: string, value: string | undefined): void {
    ;(this.upstreamHeaderChanges ??= new Map()).set(name.toLowerCase(), value)
    this.#forwardedHeaders = undefined
  }

  get<T extends string | number | boolean>(key: RequestValue<T>): T | undefined {
    return this.#values?.[key.slot] as T | undefined
  }

  set<T extends string | number | boolean>(key: RequestValue<T>, value: T): void {
    ;(this.#values ??= [])[key.slot] = value
  }

  /** The values set on this request that are shown (in the access log, on the span), with where. */
  *shownValues(): Generator<[RequestValue<string | number | boolean>, string | number | boolean]> {
    const values = this.#values
    if (values === undefined) return
    for (let slot = 0; slot < values.length; slot++) {
      const value = values[slot]
      if (value !== undefined) yield [RequestValue.declared[slot] as RequestValue<string | number | boolean>, value]
    }
  }

  pickAnother(tried: ReadonlySet<string>): Instance | undefined {
    return this.target.pick(this.target.instances(), { exclude: tried, hashKey: this.hashKey() })
  }

  /** The one place an attempt's instance changes: the in-flight count moves with it, and a new upstream link starts. */
  switchTo(instance: Instance): void {
    this.#inFlightDone?.()
    // A WebSocket upgrade holds its connection far longer than a request: least-request counts requests.
    this.#inFlightDone = this.request.headers.upgrade === undefined ? this.target.inFlight?.start(instance.origin) : undefined
    this.instance = instance
    this.attempt++
    this.signal = new AttemptSignal(this.route.timeout.connectMs)
  }

  /**
   * Starts an attempt: `handler` hears how it ends, and the attempt's clock runs from now, so the time it waits for a
   * pooled connection counts, and it fires on time (undici's own timers tick coarsely, nodejs/undici#4055).
   */
  startAttempt(handler: AttemptHandler): void {
    this.handler = handler
    this.#attemptStartedAt = performance.now()
    if (this.trace) this.traceparent = this.trace.attemptStarted(this)
    this.#attemptClock = setTimeout(onAttemptTimeout, this.timeoutMs, this)
  }

  /**
   * The attempt reported: stops its clock and hands over its handler, once (later reports find none). `failed` says
   * what the attempt tells of its instance; undefined when it tells nothing (the client left).
   */
  takeHandler(failed?: boolean, statusCode?: number): AttemptHandler | undefined {
    clearTimeout(this.#attemptClock)
    if (this.#attemptStartedAt !== 0) {
      const ms = performance.now() - this.#attemptStartedAt
      this.upstreamMs += ms
      this.#attemptStartedAt = 0
      if (failed !== undefined) this.settings.attempts.record(this.route.name, this.instance.origin, ms, failed)
      this.trace?.attemptEnded(statusCode, failed ?? false)
    }
    const handler = this.handler
    this.handler = undefined
    return handler
  }

  /**
   * The client's side of the answer is full (the body now waits on it): a client that takes nothing in for the route's
   * response timeout has its connection closed, which ends the upstream request too (nginx's send_timeout). Otherwise a
   * client that never reads would hold a pooled upstream connection for ever: undici's body timeout does not run while
   * the body waits on it. Started at the first wait, not with every answer: most answers never wait.
   */
  watchTransfer(): void {
    if (this.#transferClock !== undefined) return
    // The response's socket: the request's is let go once its body has been read.
    const socket = this.reply.raw.socket
    if (socket === null) return
    this.#bytesSent = socket.bytesWritten
    this.#transferClock = setTimeout(onTransferCheck, this.route.timeout.responseMs, this)
  }

  /**
   * Called by the transfer clock: the client took something in since last time, or nothing was waiting for it (an
   * upstream that pauses is undici's body timeout's business): wait again. Otherwise it is stuck.
   */
  checkTransfer(): void {
    const socket = this.reply.raw.socket
    if (socket === null) return
    if (socket.bytesWritten === this.#bytesSent && socket.writableLength > 0) return void socket.destroy()
    this.#bytesSent = socket.bytesWritten
    this.#transferClock?.refresh()
  }

  /**
   * Hands an attempt's answer to its handler. A policy's handler that throws fails its own request only: handlers run
   * in undici's and timers' callbacks, where a throw would end the process.
   */
  respond(handler: AttemptHandler, res: UpstreamResponse): void {
    try {
      handler.onResponse(this, res)
    } catch (error) {
      this.discard(res)
      this.#handlerFailed(error)
    }
  }

  /** Hands an attempt's failure to its handler; a throw fails the request alone, as in `respond`. */
  fail(handler: AttemptHandler, error: Error): void {
    try {
      handler.onError(this, error)
    } catch (thrown) {
      this.#handlerFailed(thrown)
    }
  }

  #handlerFailed(error: unknown): void {
    this.settings.logger.error({ requestId: this.request.id, route: this.route.name, err: error }, 'a policy failed while handling an upstream answer; the request fails alone')
    if (this.clientGone) return
    // Part of the answer is out: the client can only be told by a cut connection.
    if (this.reply.sent || this.reply.raw.headersSent) return void this.reply.raw.destroy()
    sendProblem(this.reply, new GatewayError('internal', 'A gateway policy failed on this request; its request id is in the gateway\'s logs'))
  }

  /**
   * node's parser found the client's body broken midway (a bad chunk): the request can neither go upstream whole nor
   * carry another after it. The attempt under way fails as the client's fault (a 400 no breaker counts), and its
   * upstream request is given up once that answer is out (sooner would cut the answer: the body's end is the socket's);
   * an answer already streaming is cut.
   */
  clientBodyBroke(cause: Error & { code?: string }): void {
    const fault = Object.assign(new Error(`the request body broke HTTP's framing (${cause.code ?? cause.message})`, { cause }), { code: CLIENT_BAD_BODY })
    this.bodyFault = fault
    this.reply.raw.once('close', () => this.signal?.abort(fault))
    if (this.reply.raw.headersSent) return void this.reply.raw.destroy()
    const handler = this.takeHandler()
    if (handler) this.fail(handler, fault)
  }

  beforeAnswer(shape: () => void): void {
    ;(this.#beforeAnswer ??= []).push(shape)
  }

  /** The answer's headers are about to go out: what policies asked to shape last. */
  answering(): void {
    const shapes = this.#beforeAnswer
    if (shapes === undefined) return
    this.#beforeAnswer = undefined
    for (const shape of shapes) shape()
  }

  onEnd(cleanup: () => void): void {
    if (this.#ended) return cleanup() // e.g. a slot granted after the client left
    ;(this.#cleanups ??= []).push(cleanup)
  }

  discard(res: UpstreamResponse): void {
    res.stream.destroy()
    for (const name of Object.keys(res.headers)) this.reply.removeHeader(name)
  }

  /** The response closed (see response-end.ts): answered, or the client went away first (then the attempt under way ends here). */
  end(clientGone: boolean): void {
    if (this.#ended) return
    this.#ended = true
    this.route.active.count--
    clearTimeout(this.#transferClock)
    const handler = this.takeHandler()
    if (clientGone) {
      this.clientGone = true
      this.signal?.abort(CLIENT_GONE_ERROR)
      // reply-from may never call back for a request whose client is gone: what waits for the attempt hears it now.
      if (handler) this.fail(handler, CLIENT_GONE_ERROR)
    }
    this.#inFlightDone?.()
    this.#inFlightDone = undefined
    const cleanups = this.#cleanups
    if (cleanups) for (const cleanup of cleanups) cleanup()
  }
}

/** The attempt took longer than its timeout: it is given up upstream, and its handler hears of it now. */
function onAttemptTimeout(ex: Exchange): void {
  const handler = ex.takeHandler(true)
  if (!handler) return
  ex.signal?.abort(RESPONSE_TIMEOUT_ERROR)
  ex.fail(handler, RESPONSE_TIMEOUT_ERROR)
}

function onTransferCheck(ex: Exchange): void {
  ex.checkTransfer()
}

/** The exchange a response answers, if it is a proxied request's. */
export function exchangeOfResponse(response: ServerResponse): Exchange | undefined {
  return (response as ExchangeResponse)[kExchange]
}

export function exchangeOf(request: FastifyRequest): Exchange {
  const ex = (request as ExchangeRequest)[kExchange]
  if (!ex) throw new Error('request reached the forward step without a route')
  return ex
}
