import replyFrom, { type FastifyReplyFromOptions } from '@fastify/reply-from'
import { randomUUID } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyRequest, type FastifyServerFactory } from 'fastify'
import { InFlight } from '../balancer/balancer.js'
import type { ServiceInstances } from '../balancer/instance.js'
import type { RouteProvider } from '../config/providers/provider.js'
import { RouteWatcher, type DecidedTables } from '../config/route-watcher.js'
import { answerClientError, answerFrameworkError, installProblemResponses, sendProblem } from '../http/problem-responses.js'
import { GatewayError } from '../kernel/errors.js'
import type { Logger } from '../kernel/logger.js'
import { POLICIES } from '../policies/index.js'
import { ConsumerDirectory, LiveConsumers } from '../policies/consumers.js'
import { PolicyEvents } from '../policies/policy-events.js'
import type { AnyPolicyKind, PolicyDeps } from '../policies/policy.js'
import { PolicyRegistry } from '../policies/policy-registry.js'
import { OperatorOverrides } from '../state/operator-overrides.js'
import type { SharedState } from '../state/shared-state.js'
import { exchangeOfResponse, kExchange, type ExchangeRequest, type LiveRoute } from './exchange.js'
import { normalizePath } from './normalize-path.js'
import { AttemptStats } from './attempt-stats.js'
import { compileRoute, instancesOf, policyHolders, servicesOf, type RouteParts } from './compile-route.js'
import { createRequestPath } from './request-path.js'
import { lazyRequestLogger } from './request-logger.js'
import type { RequestRecord } from './request-record.js'
import { endRequests } from './response-end.js'
import type { RequestTracer } from './request-tracer.js'
import { DEFAULT_POOL, UpstreamDispatcher, type UpstreamPoolOptions } from './upstream-dispatcher.js'
import { Tunnels } from './websocket-tunnel.js'

export type { LiveRoute, LiveTarget } from './exchange.js'
export { describePolicies } from './compile-route.js'
export type { RequestRecord } from './request-record.js'
export type { RequestTracer } from './request-tracer.js'

export interface GatewayOptions {
  /** Redis-shared state for the policies; without it they hold per process, in memory. */
  readonly state?: SharedState
  readonly providers: readonly RouteProvider[]
  /** Instead of providers: route tables decided by the primary of `--workers`. */
  readonly decidedTables?: DecidedTables
  readonly logger: Logger
  /** Trust X-Forwarded-* from clients (fastify's trustProxy: true, a hop count, or addresses). */
  readonly trustProxy: boolean | number | string
  readonly maxBodyBytes: number
  readonly pool?: UpstreamPoolOptions
  readonly discovery?: ServiceInstances
  /** Called once per request when its response has ended: the access log's line and the metrics' sample. */
  readonly onRequestEnd?: (record: RequestRecord) => void
  /** Spans per request and attempt (OpenTelemetry); none without it. */
  readonly tracer?: RequestTracer
  /** The server the app listens with (TLS, HTTP/2: see tls/); node's plain HTTP/1.1 server without it. */
  readonly serverFactory?: FastifyServerFactory
}

export interface Gateway {
  readonly app: FastifyInstance
  readonly routes: RouteWatcher<LiveRoute>
  /** What operators forced through the admin API, fleet-wide with Redis. */
  readonly overrides: OperatorOverrides
  /** What the metrics read at scrape time. */
  readonly stats: GatewayStats
  /** The policies there are, and what they are built with: the admin API's columns and actions read them. */
  readonly policies: { readonly kinds: readonly AnyPolicyKind[]; readonly deps: PolicyDeps }
  /**
   * Stops accepting connections and drains. A request that comes on a kept-alive connection meanwhile is answered 503
   * `shutting_down` (the replica is leaving: try another), or with `handOver`, served and its connection closed after
   * it (a worker leaving a host whose other workers serve on).
   */
  close(options?: { handOver?: boolean }): Promise<void>
  /** Before a hand-over's close: every answer from now on closes its connection, while the listener still accepts. */
  startHandOver(): void
}

export interface GatewayStats {
  readonly policyEvents: PolicyEvents
  /** Upstream attempts by route and instance; `current` drops instances no longer served. */
  attempts(): AttemptStats
  /** Requests under way per route. */
  activeRequests(): Iterable<[route: string, count: number]>
  /** Client connections open now. */
  connections(): Promise<number>
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/
// What the catch-all proxy route takes (@fastify/http-proxy's list); other methods get a 405 from problem responses.
const PROXIED_METHODS = ['DELETE', 'GET', 'HEAD', 'PATCH', 'POST', 'PUT', 'OPTIONS']

/** The traffic server: a fastify app with one catch-all proxy route over the live route table. */
export async function createGateway(options: GatewayOptions): Promise<Gateway> {
  const inFlight = new InFlight()
  const dispatcher = new UpstreamDispatcher(options.pool ?? DEFAULT_POOL)
  const discovery = options.discovery
  const policyEvents = new PolicyEvents()
  const overrides = new OperatorOverrides({ state: options.state, logger: options.logger })
  const consumers = new LiveConsumers()
  const policyDeps: PolicyDeps = { state: options.state, logger: options.logger, events: policyEvents, overrides, consumers, upstreams: (source) => instancesOf(source, discovery) }
  const policyRegistry = new PolicyRegistry(POLICIES, policyDeps)
  const attempts = new AttemptStats()
  const active = new Map<string, { count: number }>()
  const activeOf = (route: string) => {
    let counter = active.get(route)
    if (!counter) active.set(route, (counter = { count: 0 }))
    return counter
  }

  const routeParts: RouteParts = { discovery, inFlight, overrides, events: policyEvents, activeOf }
  const routes = new RouteWatcher<LiveRoute>({
    providers: options.providers,
    decided: options.decidedTables,
    logger: options.logger,
    compile: (definitions, consumerDefinitions) => {
      const policies = policyRegistry.build(definitions.flatMap((definition) => policyHolders(definition, POLICIES)))
      const policiesOf = (name: string) => policies.byRoute.get(name) ?? []
      let routes: LiveRoute[]
      try {
        routes = definitions.map((definition) => compileRoute(definition, policiesOf, routeParts))
      } catch (error) {
        policies.abandon()
        throw error
      }
      return {
        routes,
        // Once the table is live: the services it names are followed (and only those), its policies replace the old.
        commit: () => {
          discovery?.follow(new Set(definitions.flatMap((definition) => servicesOf(definition, POLICIES))))
          consumers.current = new ConsumerDirectory(consumerDefinitions)
          policies.commit()
        },
      }
    },
  })

  // fastify's two lines per request ("incoming request", "request completed") and reply-from's ("fetching from remote
  // server", "response received", "response errored"): at debug only. The access log says it all in one line.
  const debug = options.logger.isLevelEnabled('debug')
  const app: FastifyInstance = Fastify({
    loggerInstance: options.logger as unknown as FastifyBaseLogger,
    // fastify also takes a hop count here; its types do not say so.
    trustProxy: options.trustProxy as boolean | string,
    bodyLimit: options.maxBodyBytes,
    requestIdHeader: false,
    logController: new LogController({ requestIdLogLabel: 'requestId', disableRequestLogging: !debug }),
    childLoggerFactory: lazyRequestLogger,
    genReqId: (raw: IncomingMessage) => {
      const offered = raw.headers['x-request-id']
      return typeof offered === 'string' && REQUEST_ID.test(offered) ? offered : randomUUID()
    },
    // Keep-alive connections with no request in flight are closed at shutdown; busy ones finish their request.
    forceCloseConnections: 'idle',
    // fastify's own 503 while closing is not problem+json; the request path answers instead.
    return503OnClosing: false,
    routerOptions: { ignoreDuplicateSlashes: false, maxParamLength: 8192 },
    clientErrorHandler: (error: Error, socket: Socket) => answerClientError(error, socket, bodyBroken),
    frameworkErrors: answerFrameworkError,
    // A request without Host gets a problem+json 400 from the request path, not node's bare one.
    http: { requireHostHeader: false },
    ...(options.serverFactory ? { serverFactory: options.serverFactory } : {}),
  }) as unknown as FastifyInstance
  // A method the proxy does not route (TRACE, WebDAV's) on a path a route serves: 405 with what the route takes.
  installProblemResponses(app, (request, reply) => {
    const path = normalizePath(request.url.split('?')[0] ?? '/')
    const route = path === undefined ? undefined : routes.current().table.match(path, request)?.route
    if (!route) return sendProblem(reply, new GatewayError('no_route', `No route serves ${request.method} ${path ?? request.url}`))
    sendProblem(reply, new GatewayError('method_not_allowed', `Route "${route.name}" does not accept ${request.method}`, { headers: { allow: [...(route.methods ?? PROXIED_METHODS)].join(', ') } }))
  })
  endRequests(app, options.onRequestEnd, options.tracer)
  // reply-from logs on the request's own logger, which follows its route's level; an upstream error is logged once, by
  // the gateway's warning with route and instance.
  if (!debug) app.addHook('onRoute', (route) => void (route.logLevel = 'error'))

  let draining: 'no' | 'refuse' | 'hand-over' = 'no'
  const tunnels = new Tunnels()
  tunnels.routeUpgrades(app)
  const requestPath = createRequestPath({
    trustProxy: options.trustProxy !== false,
    maxBodyBytes: options.maxBodyBytes,
    table: () => routes.current().table,
    draining: () => draining,
    tunnels,
    overrides,
    logger: options.logger,
    attempts,
  })
  // reply-from registered straight, not through @fastify/http-proxy: its handler parsed the URL three times per request
  // to check what the request path already normalised and matched, and its WebSocket proxy is the tunnel's job here.
  // Typed by reply-from as undici's request(), whose body is a Readable: Portico's answers carry an UpstreamBody.
  await app.register(replyFrom, { undici: dispatcher.requestable as unknown as FastifyReplyFromOptions['undici'], disableRequestLogging: true })
  // Bodies stream to the upstream as they come (every content type: fastify would parse JSON and text otherwise).
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', (_request: FastifyRequest, payload: IncomingMessage, done: (error: null, body: IncomingMessage) => void) => done(null, payload))
  for (const url of ['/', '/*']) app.route({ url, method: PROXIED_METHODS, preHandler: requestPath.admit, handler: requestPath.forward, onSend: shapeAnswer })

  const stats: GatewayStats = {
    policyEvents,
    attempts() {
      const table = routes.current().table
      attempts.keepOnly(new Map(table.routes.map((r) => [r.name, new Set(r.discovered().map((i) => i.origin))])))
      return attempts
    },
    *activeRequests() {
      const served = new Set(routes.current().table.routes.map((r) => r.name))
      for (const [route, counter] of active) {
        if (served.has(route) || counter.count > 0) yield [route, counter.count]
        else active.delete(route) // gone from the table, its last request done
      }
    },
    connections: () => new Promise((resolve) => app.server.getConnections((error, count) => resolve(error ? 0 : count))),
  }

  return {
    app,
    routes,
    overrides,
    stats,
    policies: { kinds: POLICIES, deps: policyDeps },
    startHandOver() {
      draining = 'hand-over'
    },
    async close({ handOver = false } = {}) {
      draining = handOver ? 'hand-over' : 'refuse'
      routes.stop()
      policyRegistry.stop()
      overrides.stop()
      tunnels.closeAll()
      // fastify closes the connections idle when closing starts; one whose last request ends later would otherwise
      // stay open (and hold the close) until its keep-alive timeout or the drain timeout.
      const sweep = setInterval(() => app.server.closeIdleConnections(), 100)
      try {
        await app.close()
      } finally {
        clearInterval(sweep)
      }
      await dispatcher.close()
    },
  }
}

/** Whoever answers (the upstream, a cache hit, a refusal), the policies that asked have the last word on its headers. */
function shapeAnswer(request: FastifyRequest, _reply: unknown, payload: unknown, done: (error: null, payload: unknown) => void): void {
  ;(request as ExchangeRequest)[kExchange]?.answering()
  done(null, payload)
}

/** The client's body broke midway: its exchange answers (see Exchange.clientBodyBroke); any other request just closes. */
function bodyBroken(inFlight: ServerResponse, error: Error): void {
  const ex = exchangeOfResponse(inFlight)
  if (ex) ex.clientBodyBroke(error)
  else inFlight.socket?.destroy()
}
