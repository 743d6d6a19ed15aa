import httpProxy, { type FastifyHttpProxyOptions } from '@fastify/http-proxy'
import type { FastifyReplyFromHooks } from '@fastify/reply-from'
import { randomUUID } from 'node:crypto'
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import { createBalancer, hashKeyOf, InFlight, type Pick } from '../balancer/balancer.js'
import { staticInstance, type Instance } from '../balancer/instance.js'
import { GatewayError } from '../errors.js'
import { normalizePath } from '../routes/normalize-path.js'
import type { RouteDefinition } from '../routes/parse.js'
import { RouteWatcher, type RouteProvider } from '../routes/watcher.js'
import { backoffDelay } from '../discovery/backoff.js'
import { CountedFailure } from '../resilience/circuit-breaker/circuit-breaker.js'
import type { RetryConfig } from '../resilience/retry/schema.js'
import { PolicyRegistry, type RoutePolicies } from '../resilience/route-policies.js'
import type { SharedState } from '../state/shared-state.js'
import { Readable } from 'node:stream'
import { limitBody } from './body-limit.js'
import { clientResponseHeaders, upstreamRequestHeaders, upstreamWebSocketHeaders } from './forwarding-headers.js'
import { installProblemResponses, problemCodeOf, sendProblem } from './problem-responses.js'
import { classifyUpstreamFailure, errorCodes } from './upstream-errors.js'
import { DEFAULT_POOL, ForwardOptions, kForwardOptions, UpstreamDispatcher, type UpstreamPoolOptions } from './upstream-dispatcher.js'

/** Where a `service:` route's instances come from (Consul); static routes need none. */
export interface ServiceInstances {
  /** The instances of `service` now; an empty list when none pass their checks. */
  instances(service: string): readonly Instance[]
  /** Called on each route table swap with the services the table references. */
  follow(services: ReadonlySet<string>): void
}

export interface GatewayOptions {
  /** Redis-shared state for rate limits and breakers; without it they hold per process, in memory. */
  readonly state?: SharedState
  readonly providers: readonly RouteProvider[]
  readonly logger: FastifyBaseLogger
  /** Trust X-Forwarded-* from clients (fastify's trustProxy: true, a hop count, or addresses). */
  readonly trustProxy: boolean | number | string
  readonly maxBodyBytes: number
  readonly pool?: UpstreamPoolOptions
  readonly discovery?: ServiceInstances
  /** Called once per answered request (route name, or `-` when none matched). */
  readonly onResponse?: (route: string, status: number, seconds: number, problemCode: string | undefined) => void
}

/** A route as requests use it: its definition plus its balancer, where its instances come from, and its policies. */
export interface LiveRoute extends RouteDefinition, RoutePolicies {
  readonly pick: Pick
  /** reply-from's options for this route: built once, the same shape on every route, not copied per request. */
  readonly replyOptions: RouteReplyOptions
  /** The instances that may get traffic now (discovered, less ejected outliers). */
  readonly instances: () => readonly Instance[]
}

export interface Gateway {
  readonly app: FastifyInstance
  readonly routes: RouteWatcher<LiveRoute>
  close(): Promise<void>
}

/** What the request path decided, carried from the pre-handler to the forward call. */
interface Forwarding {
  readonly route: LiveRoute
  /** The attempt under way: its instance, its link to the upstream request, and its in-flight count. */
  instance: Instance
  upstream: ForwardOptions
  done: (() => void) | undefined
  /** Set while an attempt with policies waits for reply-from's answer: its outcome, or a failure its breaker counts. */
  settle: ((result: AttemptResult) => void) | undefined
  fail: ((failure: CountedFailure<AttemptResult>) => void) | undefined
  /** Set while a closed breaker waits to hear how a request it let through went. */
  record: ((failed: boolean) => void) | undefined
}

interface RouteReplyOptions {
  /** A forward that reply-from answers itself. */
  readonly forward: FastifyReplyFromHooks
  /** The same, telling a closed breaker how it went on the way. */
  readonly observed: FastifyReplyFromHooks
  /** An attempt whose outcome goes to the route's policies (breaker, retry, outliers) before the client sees it. */
  readonly attempt: FastifyReplyFromHooks
}

interface Matched {
  readonly route: LiveRoute
  /** Path and query to send upstream. */
  readonly upstreamUrl: string
  readonly upgrade: boolean
}

type AttemptResult =
  | { readonly kind: 'response'; readonly res: { readonly statusCode: number; readonly headers: IncomingHttpHeaders; readonly stream: Readable } }
  | { readonly kind: 'error'; readonly error: Error }

const kForwarding = Symbol('portico.forwarding')
const kRoute = Symbol('portico.route')
type GatewayRequest = FastifyRequest & { [kForwarding]?: Forwarding; [kRoute]?: string }

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/
const CLIENT_GONE = new Error('the client went away before the upstream answered')

export async function createGateway(options: GatewayOptions): Promise<Gateway> {
  const inFlight = new InFlight()
  const dispatcher = new UpstreamDispatcher(options.pool ?? DEFAULT_POOL)
  const trustProxy = options.trustProxy !== false
  const discovery = options.discovery
  const policyRegistry = new PolicyRegistry(options.state, options.logger)

  const routes = new RouteWatcher<LiveRoute>({
    providers: options.providers,
    logger: options.logger,
    compile: (definitions) => {
      discovery?.follow(new Set(definitions.flatMap((d) => (d.target.kind === 'service' ? [d.target.service] : []))))
      const policies = policyRegistry.build(definitions)
      return definitions.map((definition) => {
        const routePolicies = policies.get(definition.name) as RoutePolicies
        const discovered = instancesOf(definition, discovery)
        const outliers = routePolicies.outliers
        return {
          ...definition,
          ...routePolicies,
          pick: createBalancer(definition.loadBalancer, { inFlight }),
          replyOptions: replyOptionsFor(definition.timeout.responseMs),
          instances: outliers ? () => outliers.admitted(discovered()) : discovered,
        }
      })
    },
  })

  const app: FastifyInstance = Fastify({
    loggerInstance: options.logger,
    // fastify also takes a hop count here; its types do not say so.
    trustProxy: options.trustProxy as boolean | string,
    bodyLimit: options.maxBodyBytes,
    requestIdHeader: false,
    logController: new LogController({ requestIdLogLabel: 'requestId' }),
    genReqId: (raw: IncomingMessage) => {
      const offered = raw.headers['x-request-id']
      return typeof offered === 'string' && REQUEST_ID.test(offered) ? offered : randomUUID()
    },
    // Keep-alive connections with no request in flight are closed at shutdown; busy ones finish their request.
    forceCloseConnections: 'idle',
    // fastify's own 503 while closing is not problem+json; routeRequest answers instead.
    return503OnClosing: false,
    routerOptions: { ignoreDuplicateSlashes: false, maxParamLength: 8192 },
  }) as unknown as FastifyInstance
  installProblemResponses(app)
  let draining = false
  const onResponse = options.onResponse
  if (onResponse) {
    app.addHook('onResponse', (request: GatewayRequest, reply, done) => {
      onResponse(request[kRoute] ?? '-', reply.statusCode, reply.elapsedTime / 1000, problemCodeOf(reply))
      done()
    })
  }

  // ── The request's way through the gateway ───────────────────────────────────────────────────────────────
  // Callback style, not async: a promise per request costs throughput, and most requests need none.
  function routeRequest(request: GatewayRequest, reply: FastifyReply, done: (error?: Error) => void): void {
    let matched: Matched
    try {
      matched = matchRequest(request)
    } catch (error) {
      return done(error as Error)
    }
    // 2. Rate limit: may answer 429 before any upstream is chosen.
    const limitRate = matched.route.limitRate
    if (!limitRate) return handOver(request, reply, matched, done)
    limitRate(request, reply, (error) => {
      if (error) return done(error)
      // Possibly outside fastify's hook runner now: what the rest of the chain throws must not get lost.
      try {
        handOver(request, reply, matched, done)
      } catch (error) {
        if (!reply.sent) reply.send(error)
      }
    })
  }

  // 1. Match: the normalised path against the live table (one read; a reload never changes a request midway).
  function matchRequest(request: GatewayRequest): Matched {
    // A request on a kept-alive connection while draining: send the client elsewhere.
    if (draining) throw new GatewayError('shutting_down', 'The gateway is draining; retry on another replica', { headers: { connection: 'close' } })
    const [rawPath = '/', query] = splitQuery(request.url)
    const path = normalizePath(rawPath)
    if (path === undefined) throw new GatewayError('bad_path', `The path ${JSON.stringify(rawPath)} is not a valid absolute path`)
    const match = routes.current().table.match(path)
    if (!match) throw new GatewayError('no_route', `No route serves ${path}`)
    const { route } = match
    request[kRoute] = route.name
    if (route.methods && !route.methods.has(request.method)) {
      throw new GatewayError('method_not_allowed', `Route "${route.name}" does not accept ${request.method}`, {
        headers: { allow: [...route.methods].join(', ') },
      })
    }
    const upgrade = isWebSocketUpgrade(request)
    if (upgrade && !route.websocket) throw new GatewayError('websocket_not_allowed', `Route "${route.name}" does not accept WebSocket upgrades`)
    const declaredLength = request.headers['content-length']
    if (declaredLength !== undefined && Number(declaredLength) > options.maxBodyBytes) {
      throw new GatewayError('payload_too_large', `The body is ${declaredLength} bytes; the gateway accepts at most ${options.maxBodyBytes}`)
    }
    if (declaredLength === undefined && request.body instanceof Readable) {
      request.body = request.body.pipe(limitBody(options.maxBodyBytes))
    }
    return { route, upstreamUrl: query === undefined ? match.upstreamPath : `${match.upstreamPath}?${query}`, upgrade }
  }

  function handOver(request: GatewayRequest, reply: FastifyReply, { route, upstreamUrl, upgrade }: Matched, done: (error?: Error) => void): void {
    // 3. Pick an instance.
    const instance = route.pick(route.instances(), { hashKey: hashKeyFor(route, request) })
    if (!instance) return done(new GatewayError('no_instance', noInstanceDetail(route)))

    // 4. Hand over to the forward call: the upstream path, and an abort for a client that goes away.
    request.raw.url = upstreamUrl
    const forwarding: Forwarding = {
      route,
      instance,
      upstream: new ForwardOptions(route.timeout.connectMs),
      // Only least-request reads the in-flight counts.
      done: upgrade || route.loadBalancer !== 'least-request' ? undefined : inFlight.start(instance.origin),
      settle: undefined,
      fail: undefined,
      record: undefined,
    }
    ;(reply.raw as ServerResponse & { [kForwarding]?: Forwarding })[kForwarding] = forwarding
    reply.raw.on('close', onClientClose)
    request[kForwarding] = forwarding
    done()
  }

  // 5. Forward with the route's timeouts. A route without upstream policies streams straight through, and so does one
  //    whose only policy is a closed breaker, which just hears how it went. Otherwise each attempt runs through the
  //    policies (breaker, retry, outliers) before the client sees it.
  //    http-proxy's own per-request options are not used: a per-route object of ours keeps reply-from on one shape.
  //    Returns nothing, so fastify leaves the answer to reply-from or forwardWithPolicies. (A returned promise that
  //    resolves before the upstream body has gone out makes fastify answer a second time, with an empty body; a
  //    returned reply makes it watch the response's end, on every request.)
  function forward(request: GatewayRequest, reply: FastifyReply): void {
    const forwarding = forwardingOf(request)
    const { route } = forwarding
    if (!route.retry && !route.outliers) {
      if (!route.breaker) return void reply.from(request.url, route.replyOptions.forward)
      forwarding.record = route.breaker.observe()
      if (forwarding.record) return void reply.from(request.url, route.replyOptions.observed)
    }
    forwardWithPolicies(request, reply, forwarding).catch((error: Error) => {
      if (!reply.sent) reply.send(error)
    })
  }

  async function forwardWithPolicies(request: GatewayRequest, reply: FastifyReply, forwarding: Forwarding): Promise<void> {
    const { route } = forwarding
    const retry = route.retry
    const deadline = Date.now() + (retry?.deadlineMs ?? route.timeout.connectMs + route.timeout.responseMs)
    const tried = new Set<string>()
    route.retryBudget?.recordRequest()
    for (let attempt = 1; ; attempt++) {
      const { instance } = forwarding
      tried.add(instance.id)
      const timeout = Math.max(1, Math.min(route.timeout.responseMs, deadline - Date.now()))
      const send = () =>
        new Promise<AttemptResult>((resolve, reject) => {
          forwarding.settle = resolve
          forwarding.fail = reject
          reply.from(request.url, timeout === route.timeout.responseMs ? route.replyOptions.attempt : { ...route.replyOptions.attempt, timeout })
        })
      let result: AttemptResult
      try {
        result = route.breaker ? await route.breaker.run(send) : await send()
      } catch (error) {
        if (error instanceof CountedFailure) result = error.outcome as AttemptResult
        else if (error instanceof GatewayError) return void sendProblem(reply, error) // circuit_open: no upstream call
        else throw error
      }
      if (forwarding.upstream.aborted) return discard(result, reply) // the client is gone: no verdict on the instance
      route.outliers?.record(instance.id, !isFailure(result, SERVER_ERRORS), route.instances().length)

      const next =
        retry && attempt < retry.attempts && isRetryable(result, retry) && isReplayable(request, retry.methods) && Date.now() < deadline
          ? route.pick(route.instances(), { exclude: tried, hashKey: hashKeyFor(route, request) })
          : undefined
      if (!next || tried.has(next.id) || !route.retryBudget?.tryRetry()) return deliver(result, reply, forwarding)

      discard(result, reply)
      request.log.info({ route: route.name, instance: instance.origin, next: next.origin, attempt }, 'retrying on another instance')
      await new Promise((resolve) => setTimeout(resolve, backoffDelay(attempt - 1, { baseMs: retry?.backoffMs ?? 25, capMs: 1_000 })))
      forwarding.done?.()
      forwarding.instance = next
      forwarding.upstream = new ForwardOptions(route.timeout.connectMs)
      forwarding.done = route.loadBalancer === 'least-request' ? inFlight.start(next.origin) : undefined
    }
  }

  function deliver(result: AttemptResult, reply: FastifyReply, forwarding: Forwarding): void {
    if (result.kind === 'response') {
      reply.send(result.res.stream)
      return
    }
    if (reply.sent) return
    const failure = classifyUpstreamFailure(result.error, forwarding.instance.origin, forwarding.route.timeout.responseMs)
    reply.request.log.warn({ route: forwarding.route.name, instance: forwarding.instance.origin, code: failure.code, err: result.error }, failure.message)
    sendProblem(reply, failure)
  }

  /** Drops a response that will not reach the client, with the headers reply-from already copied from it. */
  function discard(result: AttemptResult, reply: FastifyReply): void {
    if (result.kind !== 'response') return
    result.res.stream.on('error', () => undefined).destroy()
    for (const name of Object.keys(result.res.headers)) reply.removeHeader(name)
  }

  function rewriteRequestHeaders(request: GatewayRequest, headers: IncomingHttpHeaders): IncomingHttpHeaders {
    const { route, upstream } = forwardingOf(request)
    const forwarded = upstreamRequestHeaders(request, headers, { trustProxy, preserveHost: route.preserveHost }) as IncomingHttpHeaders & {
      [kForwardOptions]?: ForwardOptions
    }
    forwarded[kForwardOptions] = upstream
    return forwarded
  }

  function onError(reply: FastifyReply, { error }: { error: Error }): void {
    const { route, instance, upstream } = forwardingOf(reply.request)
    if (upstream.aborted || reply.sent) return
    const failure = classifyUpstreamFailure(error, instance.origin, route.timeout.responseMs)
    reply.request.log.warn({ route: route.name, instance: instance.origin, code: failure.code, err: error }, failure.message)
    sendProblem(reply, failure)
  }
  function upstreamOrigin(request: GatewayRequest): string {
    return forwardingOf(request).instance.origin
  }
  // reply-from's hook types cover HTTP/2 requests too; ours are HTTP/1 only.
  // reply-from retries a GET answered 503 up to 10 times on its own (and `maxRetriesOn503: 0` means 10): a retry
  // policy that never asks for one turns that off. Retries are the route's `retry` policy's business.
  function replyOptionsFor(timeout: number): RouteReplyOptions {
    const forward = { getUpstream: upstreamOrigin, rewriteRequestHeaders, rewriteHeaders: clientResponseHeaders, onError, retryDelay: noRetry, timeout }
    const observed = {
      ...forward,
      onResponse: (request: GatewayRequest, reply: FastifyReply, res: Extract<AttemptResult, { kind: 'response' }>['res']) => {
        const forwarding = forwardingOf(request)
        recordOutcome(forwarding, forwarding.route.circuitBreaker?.failureStatuses.has(res.statusCode) ?? false)
        reply.send(res.stream)
      },
      onError: (reply: FastifyReply, context: { error: Error }) => {
        recordOutcome(forwardingOf(reply.request), true)
        onError(reply, context)
      },
    }
    const attempt = {
      ...forward,
      onResponse: (request: GatewayRequest, _reply: FastifyReply, res: Extract<AttemptResult, { kind: 'response' }>['res']) => settleAttempt(forwardingOf(request), { kind: 'response', res }),
      onError: (reply: FastifyReply, { error }: { error: Error }) => settleAttempt(forwardingOf(reply.request), { kind: 'error', error }),
    }
    return { forward, observed, attempt } as unknown as RouteReplyOptions
  }

  // ─────────────────────────────────────────────────────────────────────────────────────────────────────────

  const proxyOptions = {
    upstream: '',
    prefix: '/',
    websocket: true,
    undici: dispatcher,
    disableRequestLogging: true,
    internalRewriteLocationHeader: false,
    preHandler: routeRequest,
    handler: forward,
    // The WebSocket proxy asks here for its upstream.
    replyOptions: { getUpstream: upstreamOrigin },
    wsClientOptions: {
      rewriteRequestHeaders: (_headers: object, request: FastifyRequest) => upstreamWebSocketHeaders(request, { trustProxy, preserveHost: false }),
    },
  }
  // The plugin's types describe its request for every server kind (HTTP/2 too); ours is plain HTTP/1.
  await app.register(httpProxy, proxyOptions as unknown as FastifyHttpProxyOptions)

  return {
    app,
    routes,
    async close() {
      draining = true
      routes.stop()
      policyRegistry.stop()
      await app.close()
      await dispatcher.close()
    },
  }
}

const noRetry = (): null => null

const SERVER_ERRORS: ReadonlySet<number> = new Set(Array.from({ length: 100 }, (_, i) => 500 + i))
const CONNECT_ERRORS = new Set(['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_SOCKET'])
const RESPONSE_TIMEOUTS = new Set(['UND_ERR_HEADERS_TIMEOUT', 'FST_REPLY_FROM_GATEWAY_TIMEOUT'])

function isFailure(result: AttemptResult, statuses: ReadonlySet<number> | undefined): boolean {
  return result.kind === 'error' || (statuses?.has(result.res.statusCode) ?? false)
}

function isRetryable(result: AttemptResult, retry: RetryConfig): boolean {
  if (result.kind === 'response') return retry.onStatuses.has(result.res.statusCode)
  const codes = errorCodes(result.error)
  return (retry.onConnectError && codes.some((c) => CONNECT_ERRORS.has(c))) || (retry.onTimeout && codes.some((c) => RESPONSE_TIMEOUTS.has(c)))
}

/** Only a request without a body can be sent again: a streamed body is gone once the first attempt read it. */
function isReplayable(request: FastifyRequest, methods: ReadonlySet<string>): boolean {
  const length = request.headers['content-length']
  return methods.has(request.method) && (length === undefined || length === '0') && request.headers['transfer-encoding'] === undefined
}

function hashKeyFor(route: LiveRoute, request: FastifyRequest): string | undefined {
  return route.loadBalancer === 'consistent-hash' ? hashKeyOf(route.hashOn, request.ip, request.headers) : undefined
}

/**
 * One listener for every response (no closure per request): ends the in-flight count; for a client gone before its
 * answer, aborts the upstream request and ends what waits for it (reply-from may never call back for it).
 */
function onClientClose(this: ServerResponse & { [kForwarding]?: Forwarding }): void {
  const forwarding = this[kForwarding]
  if (!forwarding) return
  forwarding.done?.()
  if (this.writableFinished) return
  forwarding.upstream.abort(CLIENT_GONE)
  recordOutcome(forwarding, false)
  settleAttempt(forwarding, { kind: 'error', error: CLIENT_GONE })
}

/**
 * Ends an attempt's wait. The breaker counts what it is told is a failure: errors and the configured statuses, but not
 * a client that went away.
 */
function settleAttempt(forwarding: Forwarding, result: AttemptResult): void {
  const { settle: resolve, fail, route } = forwarding
  forwarding.settle = forwarding.fail = undefined
  if (route.breaker && !forwarding.upstream.aborted && isFailure(result, route.circuitBreaker?.failureStatuses)) fail?.(new CountedFailure(result))
  else resolve?.(result)
}

function recordOutcome(forwarding: Forwarding, failed: boolean): void {
  const record = forwarding.record
  forwarding.record = undefined
  record?.(failed && !forwarding.upstream.aborted)
}

function forwardingOf(request: GatewayRequest): Forwarding {
  const forwarding = request[kForwarding]
  if (!forwarding) throw new GatewayError('internal', 'request reached the forward step without a route')
  return forwarding
}

function instancesOf(definition: RouteDefinition, discovery: ServiceInstances | undefined): () => readonly Instance[] {
  const { target } = definition
  if (target.kind === 'static') {
    const fixed = Object.freeze(target.upstreams.map(staticInstance))
    return () => fixed
  }
  if (!discovery) return () => []
  return () => discovery.instances(target.service)
}

function noInstanceDetail(route: LiveRoute): string {
  return route.target.kind === 'service'
    ? `Service "${route.target.service}" of route "${route.name}" has no passing instance`
    : `Route "${route.name}" has no upstream instance`
}

function splitQuery(url: string): [string, string | undefined] {
  const index = url.indexOf('?')
  return index === -1 ? [url, undefined] : [url.slice(0, index), url.slice(index + 1)]
}

function isWebSocketUpgrade(request: FastifyRequest): boolean {
  return request.headers.upgrade?.toLowerCase() === 'websocket'
}
