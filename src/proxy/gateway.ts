import httpProxy, { type FastifyHttpProxyOptions } from '@fastify/http-proxy'
import type { FastifyReplyFromHooks } from '@fastify/reply-from'
import { randomUUID } from 'node:crypto'
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http'
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import { createBalancer, hashKeyOf, InFlight, type Pick } from '../balancer/balancer.js'
import { staticInstance, type Instance } from '../balancer/instance.js'
import { GatewayError } from '../errors.js'
import { normalizePath } from '../routes/normalize-path.js'
import type { RouteDefinition } from '../routes/parse.js'
import { RouteWatcher, type RouteProvider } from '../routes/watcher.js'
import { clientResponseHeaders, upstreamRequestHeaders, upstreamWebSocketHeaders } from './forwarding-headers.js'
import { installProblemResponses, sendProblem } from './problem-responses.js'
import { classifyUpstreamFailure } from './upstream-errors.js'
import { DEFAULT_POOL, ForwardOptions, kForwardOptions, UpstreamDispatcher, type UpstreamPoolOptions } from './upstream-dispatcher.js'

/** Where a `service:` route's instances come from (Consul); static routes need none. */
export interface ServiceInstances {
  /** The instances of `service` now; an empty list when none pass their checks. */
  instances(service: string): readonly Instance[]
  /** Called on each route table swap with the services the table references. */
  follow(services: ReadonlySet<string>): void
}

export interface GatewayOptions {
  readonly providers: readonly RouteProvider[]
  readonly logger: FastifyBaseLogger
  /** Trust X-Forwarded-* from clients (fastify's trustProxy: true, a hop count, or addresses). */
  readonly trustProxy: boolean | number | string
  readonly maxBodyBytes: number
  readonly pool?: UpstreamPoolOptions
  readonly discovery?: ServiceInstances
}

/** A route as requests use it: its definition plus its balancer and where its instances come from. */
export interface LiveRoute extends RouteDefinition {
  readonly pick: Pick
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
  readonly instance: Instance
  readonly upstream: ForwardOptions
}

const kForwarding = Symbol('portico.forwarding')
type GatewayRequest = FastifyRequest & { [kForwarding]?: Forwarding }

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/
const CLIENT_GONE = new Error('the client went away before the upstream answered')

export async function createGateway(options: GatewayOptions): Promise<Gateway> {
  const inFlight = new InFlight()
  const dispatcher = new UpstreamDispatcher(options.pool ?? DEFAULT_POOL)
  const trustProxy = options.trustProxy !== false
  const discovery = options.discovery

  const routes = new RouteWatcher<LiveRoute>({
    providers: options.providers,
    logger: options.logger,
    compile: (definitions) => {
      discovery?.follow(new Set(definitions.flatMap((d) => (d.target.kind === 'service' ? [d.target.service] : []))))
      return definitions.map((definition) => ({
        ...definition,
        pick: createBalancer(definition.loadBalancer, { inFlight }),
        instances: instancesOf(definition, discovery),
      }))
    },
  })

  const app: FastifyInstance = Fastify({
    loggerInstance: options.logger,
    // fastify also takes a hop count here; its types do not say so.
    trustProxy: options.trustProxy as boolean | string,
    bodyLimit: options.maxBodyBytes,
    requestIdHeader: false,
    requestIdLogLabel: 'requestId',
    genReqId: (raw: IncomingMessage) => {
      const offered = raw.headers['x-request-id']
      return typeof offered === 'string' && REQUEST_ID.test(offered) ? offered : randomUUID()
    },
    // Keep-alive connections with no request in flight are closed at shutdown; busy ones finish their request.
    forceCloseConnections: 'idle',
    return503OnClosing: true,
    disableRequestLogging: false,
    routerOptions: { ignoreDuplicateSlashes: false, maxParamLength: 8192 },
  }) as unknown as FastifyInstance
  installProblemResponses(app)

  // ── The request's way through the gateway ───────────────────────────────────────────────────────────────
  async function routeRequest(request: GatewayRequest, reply: FastifyReply): Promise<void> {
    // 1. Match: the normalised path against the live table (one read; a reload never changes a request midway).
    const [rawPath = '/', query] = splitQuery(request.url)
    const path = normalizePath(rawPath)
    if (path === undefined) throw new GatewayError('bad_path', `The path ${JSON.stringify(rawPath)} is not a valid absolute path`)
    const match = routes.current().table.match(path)
    if (!match) throw new GatewayError('no_route', `No route serves ${path}`)
    const { route } = match
    if (route.methods && !route.methods.has(request.method)) {
      throw new GatewayError('method_not_allowed', `Route "${route.name}" does not accept ${request.method}`, {
        headers: { allow: [...route.methods].join(', ') },
      })
    }
    const upgrade = isWebSocketUpgrade(request)
    if (upgrade && !route.websocket) throw new GatewayError('websocket_not_allowed', `Route "${route.name}" does not accept WebSocket upgrades`)
    const declaredLength = Number(request.headers['content-length'] ?? 0)
    if (declaredLength > options.maxBodyBytes) {
      throw new GatewayError('payload_too_large', `The body is ${declaredLength} bytes; the gateway accepts at most ${options.maxBodyBytes}`)
    }

    // 2. Pick an instance.
    const instance = route.pick(route.instances(), { hashKey: hashKeyOf(route.hashOn, request.ip, request.headers) })
    if (!instance) throw new GatewayError('no_instance', noInstanceDetail(route))

    // 3. Hand over to the forward call: the upstream path, and an abort for a client that goes away.
    request.raw.url = query === undefined ? match.upstreamPath : `${match.upstreamPath}?${query}`
    const upstream = new ForwardOptions(route.timeout.connectMs)
    const done = upgrade ? undefined : inFlight.start(instance.origin)
    reply.raw.once('close', () => {
      done?.()
      if (!reply.raw.writableFinished) upstream.abort(CLIENT_GONE)
    })
    request[kForwarding] = { route, instance, upstream }
  }

  // 4. Forward with the route's timeouts; failures become problem responses.
  function forward(request: GatewayRequest, reply: FastifyReply, _dest: string, replyOptions: object): FastifyReply {
    const { route, instance } = forwardingOf(request)
    return reply.from(instance.origin + request.url, { ...replyOptions, ...forwardHooks, timeout: route.timeout.responseMs })
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
  // reply-from's hook types cover HTTP/2 requests too; ours are HTTP/1 only.
  const forwardHooks = { rewriteRequestHeaders, onError } as unknown as FastifyReplyFromHooks
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
    replyOptions: {
      getUpstream: (request: FastifyRequest) => forwardingOf(request).instance.origin,
      rewriteHeaders: (headers: IncomingHttpHeaders, request: FastifyRequest) => clientResponseHeaders(request, headers),
    },
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
      routes.stop()
      await app.close()
      await dispatcher.close()
    },
  }
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
