import type { FastifyReply, FastifyRequest } from 'fastify'
import { Readable } from 'node:stream'
import type { RouteTable } from '../config/route-table.js'
import { GatewayError } from '../kernel/errors.js'
import { VALID_HOST } from '../kernel/host.js'
import type { BreakerOverride, OperatorOverrides } from '../state/operator-overrides.js'
import { LimitedBody } from './body-limit.js'
import { Exchange, exchangeOf, type GatewaySettings, type LiveRoute, type LiveTarget } from './exchange.js'
import { normalizePath } from './normalize-path.js'
import { traceOf } from './response-end.js'
import { deliver, engineCanSend, unsendablePath } from './send.js'
import { isUpgradeRequest, type Tunnels } from './websocket-tunnel.js'

/** What the request path reads of its gateway on every request. */
export interface RequestPathContext extends GatewaySettings {
  readonly table: () => RouteTable<LiveRoute>
  readonly draining: () => 'no' | 'refuse' | 'hand-over'
  readonly tunnels: Tunnels
  readonly overrides: OperatorOverrides
}

/**
 * The request's way through the gateway, in the order it runs: match → guards → pick (the pre-handler), then send
 * (the handler). Callback style: a promise per request costs throughput, and most requests need none. The steps are
 * module-level functions of the request's Exchange; only the entry points close over the gateway (once).
 */
export function createRequestPath(context: RequestPathContext) {
  const admit = (request: FastifyRequest, reply: FastifyReply, done: (error?: Error) => void): void => {
    if (reply.raw.socket === null) return waitForTurn(admit, request, reply, done)
    let ex: Exchange
    try {
      ex = matchRoute(context, request, reply, done)
    } catch (error) {
      return done(error as Error)
    }
    runGuards(ex)
  }
  return {
    admit,
    /**
     * 4. Send, through the route's attempt wrappers (or none); an upgrade goes through its tunnel. Returns nothing, so
     * fastify leaves the answer to the chain: a returned promise that resolves before the upstream body has gone out
     * makes fastify answer a second time.
     */
    forward(request: FastifyRequest): void {
      const ex = exchangeOf(request)
      if (isUpgradeRequest(request.raw)) return context.tunnels.tunnel(ex)
      ex.route.send(ex, deliver)
    },
  }
}

/**
 * 0. A pipelined request waits for its turn: node parses every request a client pipelines at once, and its answer
 * waits behind the ones before it, but forwarding it now would run it upstream beside them, its side effects in any
 * order (nginx reads the next request only once it answered the one before). Its turn comes when node hands its answer
 * the connection; a connection that closes first (the answer before said `Connection: close`, as every HTTP/1.0
 * answer without keep-alive does) ends it unsent.
 */
function waitForTurn(admit: (request: FastifyRequest, reply: FastifyReply, done: (error?: Error) => void) => void, request: FastifyRequest, reply: FastifyReply, done: (error?: Error) => void): void {
  const turn = (): void => {
    request.raw.off('close', never)
    admit(request, reply, done)
  }
  const never = (): void => void reply.raw.off('socket', turn)
  reply.raw.once('socket', turn)
  request.raw.once('close', never)
}

/** 1. Match: the normalised path against the live table (one read; a reload never changes a request midway). */
function matchRoute(context: RequestPathContext, request: FastifyRequest, reply: FastifyReply, done: (error?: Error) => void): Exchange {
  // A request on a kept-alive connection while draining: send the client elsewhere (or, handing over to the host's
  // other workers, serve it and let the client's next connection reach one of them).
  const draining = context.draining()
  if (draining !== 'no') {
    if (draining === 'refuse') throw new GatewayError('shutting_down', 'The gateway is draining; retry on another replica', { headers: { connection: 'close' } })
    reply.header('connection', 'close')
  }
  checkFraming(request)
  const [rawPath = '/', query] = splitQuery(request.url)
  const path = normalizePath(rawPath)
  if (path === undefined) throw new GatewayError('bad_path', `The path ${JSON.stringify(rawPath)} is not a valid absolute path`)
  const match = context.table().match(path, request)
  if (!match) throw new GatewayError('no_route', `No route serves ${path}`)
  const { route } = match
  if (!engineCanSend(match.upstreamPath)) throw unsendablePath(match.upstreamPath)
  const forced = context.overrides.breaker(route.name)
  if (forced?.state === 'open') throw forcedOpen(route.name, forced)
  // The query goes upstream byte for byte, as the client sent it.
  const ex = new Exchange(request, reply, route, match.upstreamPath, query === undefined ? match.upstreamPath : `${match.upstreamPath}?${query}`, context, done, route.guards === null ? undefined : continueGuards, traceOf(reply))
  if (route.methods && !route.methods.has(request.method)) {
    throw new GatewayError('method_not_allowed', `Route "${route.name}" does not accept ${request.method}`, { headers: { allow: [...route.methods].join(', ') } })
  }
  if (isUpgradeRequest(request.raw) && !isWebSocketUpgrade(request)) throw new GatewayError('not_implemented', `Upgrade to ${JSON.stringify(request.headers.upgrade)} is not supported; only websocket`)
  if (isWebSocketUpgrade(request) && !route.websocket) throw new GatewayError('websocket_not_allowed', `Route "${route.name}" does not accept WebSocket upgrades`)
  const declaredLength = request.headers['content-length']
  if (declaredLength !== undefined && Number(declaredLength) > context.maxBodyBytes) {
    throw new GatewayError('payload_too_large', `The body is ${declaredLength} bytes; the gateway accepts at most ${context.maxBodyBytes}`)
  }
  if (request.body instanceof Readable) ex.body = declaredLength === undefined ? request.body.pipe(new LimitedBody(context.maxBodyBytes)) : request.body
  return ex
}

/**
 * What node's parser lets through but RFC 9112 does not: exactly one valid Host (none only from HTTP/1.0; HTTP/2's
 * :authority counts), and no transfer coding but chunked (nginx answers 501 too; a gzip coding would be lost on the way).
 */
function checkFraming(request: FastifyRequest): void {
  const raw = request.raw.rawHeaders
  let hosts = 0
  for (let i = 0; i < raw.length; i += 2) if ((raw[i] as string).length === 4 && (raw[i] as string).toLowerCase() === 'host') hosts++
  const host = request.headers.host
  if (hosts > 1) throw new GatewayError('bad_request', 'The request has more than one Host header')
  if (host === undefined) {
    if (request.raw.httpVersion !== '1.0') throw new GatewayError('bad_request', 'An HTTP/1.1 request needs a Host header')
  } else if (!VALID_HOST.test(host)) {
    throw new GatewayError('bad_request', 'The Host header is not a valid host')
  }
  // An HTTP/2 request's host is its :authority (the server gave it as Host); RFC 9113 §8.3.1: a Host that says otherwise is malformed.
  const authority = request.headers[':authority']
  if (authority !== undefined && authority !== host) throw new GatewayError('bad_request', 'The Host header and :authority name different hosts')
  const codings = request.headers['transfer-encoding']
  if (codings !== undefined && codings.toLowerCase() !== 'chunked') throw new GatewayError('not_implemented', `Transfer-Encoding "${codings}" is not supported; only chunked`)
}


/** 2. Guards (rate limit, concurrency limit, …): each may answer before any upstream is chosen. */
function runGuards(ex: Exchange): void {
  const guards = ex.route.guards
  if (guards === null || ex.guardIndex === guards.length) return pickInstance(ex)
  const guard = guards[ex.guardIndex++] as NonNullable<typeof guards>[number]
  guard(ex, ex.next as (error?: Error) => void)
}

function continueGuards(ex: Exchange, error?: Error): void {
  if (error) return ex.proceed(error)
  // Possibly outside fastify's hook runner now (a guard that waited): what the rest throws must not get lost.
  try {
    runGuards(ex)
  } catch (thrown) {
    if (!ex.reply.sent) ex.reply.send(thrown)
  }
}

/** 3. Pick a split's target, then an instance of it; the exchange takes it (and its in-flight count). */
function pickInstance(ex: Exchange): void {
  const { route } = ex
  if (route.chooseTarget !== null) ex.target = route.chooseTarget(ex)
  const { target } = ex
  const instance = target.pick(target.instances(), { hashKey: ex.hashKey() })
  if (!instance) return ex.proceed(new GatewayError('no_instance', noInstanceDetail(route, target)))
  ex.switchTo(instance)
  // What the upstream gets (the WebSocket proxy reads it from here too); fastify's originalUrl (the problem's
  // `instance`, the logs) keeps what the client asked for.
  const raw = ex.request.raw as typeof ex.request.raw & { originalUrl?: string }
  raw.originalUrl = raw.url
  raw.url = ex.upstreamUrl
  ex.proceed()
}

/** An operator forced the route's breaker open: clients hear when to come back (or in a minute, when it is open until set back). */
function forcedOpen(route: string, forced: BreakerOverride): GatewayError {
  const retryAfter = forced.until === undefined ? 60 : Math.max(1, Math.ceil((forced.until - Date.now()) / 1000))
  return new GatewayError('circuit_open', `The breaker of route "${route}" was opened by an operator${forced.reason ? ` (${forced.reason})` : ''}`, { headers: { 'retry-after': String(retryAfter) } })
}

function noInstanceDetail(route: LiveRoute, { name, upstream }: LiveTarget): string {
  const of = name === '' ? `route "${route.name}"` : `target "${name}" of route "${route.name}"`
  return upstream.kind === 'service' ? `Service "${upstream.service}" of ${of} has no passing instance` : `${of[0]?.toUpperCase()}${of.slice(1)} has no upstream instance`
}

function splitQuery(url: string): [string, string | undefined] {
  const index = url.indexOf('?')
  return index === -1 ? [url, undefined] : [url.slice(0, index), url.slice(index + 1)]
}

function isWebSocketUpgrade(request: FastifyRequest): boolean {
  return request.headers.upgrade?.toLowerCase() === 'websocket'
}
