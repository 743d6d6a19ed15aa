import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import { createHash, timingSafeEqual } from 'node:crypto'
import { GatewayError } from '../kernel/errors.js'
import { answerClientError, installProblemResponses, sendProblem } from '../http/problem-responses.js'
import type { Instance } from '../balancer/instance.js'
import { describePolicies, type LiveRoute, type LiveTarget } from '../proxy/gateway.js'
import type { RouteWatcher } from '../config/route-watcher.js'
import type { HealthRegistry } from './health-registry.js'
import type { Registry } from 'prom-client'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'
import type { AnyPolicyKind, PolicyDeps, RoutePolicy, StatusCell, StatusColumn } from '../policies/policy.js'
import type { ConsumerDefinition } from '../policies/consumers.js'
import { parseDuration } from '../kernel/duration.js'
import type { OperatorOverrides } from '../state/operator-overrides.js'
import { AUDIT_LENGTH, type AuditLog } from './audit-log.js'
import { RouteTable } from '../config/route-table.js'
import { normalizePath } from '../proxy/normalize-path.js'
import type { Mark, TrafficHistory } from '../observability/traffic-history.js'

export interface AdminOptions {
  readonly logger: FastifyBaseLogger
  readonly routes: RouteWatcher<LiveRoute>
  readonly health: HealthRegistry
  /** Served on /metrics in Prometheus' text format. */
  readonly metrics: Registry
  /**
   * Named admin tokens. When there is any, every admin endpoint but /healthz and /readyz (probes) wants
   * `Authorization: Bearer <token>`; the token's name is who acted, in the audit.
   */
  readonly tokens: readonly AdminToken[]
  /** /metrics answers without a token too (PORTICO_METRICS_PUBLIC). */
  readonly metricsPublic: boolean
  readonly overrides: OperatorOverrides
  readonly audit: AuditLog
  /** The replicas of the fleet (just this one without Redis), as each describes itself. */
  readonly fleet: () => Promise<Record<string, unknown>[]>
  /** This replica's id in the fleet (its audit entries say which replica acted). */
  readonly replicaId: string
  /** Each route's counts so far, for the status page's rates and p99. */
  readonly traffic: () => readonly { route: string; requests: number; errors: number; buckets: number[] }[]
  /** Upper bounds (s) of those buckets. */
  readonly bucketBounds: readonly number[]
  /** The last 15 minutes of each route's traffic, for the status page's charts. */
  readonly history: TrafficHistory
  /** The policies there are, with what they were built with: their status columns and admin actions. */
  readonly policies: { readonly kinds: readonly AnyPolicyKind[]; readonly deps: PolicyDeps }
}

export interface AdminToken {
  readonly name: string
  readonly token: string
}

// The auth scheme is case-insensitive (RFC 9110 §11.1).
const BEARER = /^bearer +(\S+) *$/i
const LOCAL_HOST = /^(localhost|\d{1,3}(\.\d{1,3}){3}|\[[0-9a-f:.]+\])(:\d+)?$/i
const digest = (token: string): Buffer => createHash('sha256').update(token).digest()
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS'])

/** Why an admin change may not be made from where it came, or undefined when it may. */
function crossSiteRefusal(request: FastifyRequest): GatewayError | undefined {
  const { origin, host } = request.headers
  const site = request.headers['sec-fetch-site']
  if (origin !== undefined && !sameOrigin(origin, host)) return new GatewayError('forbidden', `Admin changes are not taken from a page of another origin (${origin})`)
  if (origin === undefined && site !== undefined && site !== 'same-origin' && site !== 'none') return new GatewayError('forbidden', `Admin changes are not taken from a page of another site (Sec-Fetch-Site: ${site})`)
  const type = request.headers['content-type']?.split(';')[0]?.trim().toLowerCase()
  if (request.method === 'POST' && type !== 'application/json') return new GatewayError('unsupported_media_type', 'Admin actions take a JSON body: send Content-Type: application/json (and `{}` when there is nothing to say)')
  return undefined
}

/** The Origin is the admin port as the request names it (the status page's own fetches). */
function sameOrigin(origin: string, host: string | undefined): boolean {
  try {
    const url = new URL(origin)
    return (url.protocol === 'http:' || url.protocol === 'https:') && host !== undefined && url.host === host.toLowerCase()
  } catch {
    return false // `null` (a sandboxed frame, a file) and junk
  }
}

/** The operator's port, apart from client traffic: liveness, readiness, and the live route table with its errors. */
export function createAdminServer(options: AdminOptions): FastifyInstance {
  const app = Fastify({
    loggerInstance: options.logger.child({ component: 'admin' }),
    logController: new LogController({ disableRequestLogging: true }),
    clientErrorHandler: answerClientError,
  }) as unknown as FastifyInstance
  installProblemResponses(app)
  // Without a token, a page on another site could reach this port through DNS rebinding (its name resolving to
  // 127.0.0.1): only requests that name the port by address, or as localhost, are answered.
  if (options.tokens.length === 0) {
    app.addHook('onRequest', (request, reply, done) => {
      if (LOCAL_HOST.test(request.headers.host ?? '')) return done()
      sendProblem(reply, new GatewayError('forbidden', 'Without PORTICO_ADMIN_TOKEN the admin port answers only to Host: an IP address or localhost'))
    })
  }

  // A page on any site can make a browser POST here (a text/plain or form body needs no preflight) and the browser sends
  // along whatever it holds. So a change must come as JSON (a cross-origin JSON POST needs a preflight, which this port
  // never grants) and not from another origin, as the browser tells: Origin, else Sec-Fetch-Site. curl and scripts send
  // neither and pass.
  app.addHook('onRequest', (request, reply, done) => {
    if (SAFE_METHODS.has(request.method)) return done()
    const refusal = crossSiteRefusal(request)
    if (refusal) return void sendProblem(reply, refusal)
    done()
  })

  // Compared as digests, against every token (no early exit): constant time whatever the lengths, and no timing tells
  // which token came close.
  const expected = options.tokens.map(({ name, token }) => ({ name, digest: digest(token) }))
  const authorize = async (request: FastifyRequest, reply: FastifyReply) => {
    if (expected.length === 0) return
    const offered = digest(BEARER.exec(request.headers.authorization ?? '')?.[1] ?? '')
    let who: string | undefined
    for (const { name, digest: candidate } of expected) if (timingSafeEqual(offered, candidate)) who = name
    if (who === undefined) {
      reply.header('www-authenticate', 'Bearer realm="portico-admin"')
      return sendProblem(reply, new GatewayError('unauthorized', 'This admin endpoint needs Authorization: Bearer <an admin token>'))
    }
    ;(request as AdminRequest)[kOperator] = who
  }
  const operatorOf = (request: FastifyRequest): string => (request as AdminRequest)[kOperator] ?? 'local'

  app.get('/healthz', async () => ({ status: 'alive' }))

  // Open, so that Kubernetes probes work with a token set.
  app.get('/readyz', async (_request, reply) => {
    const report = options.health.report()
    return reply.code(report.ready ? 200 : 503).send(report)
  })

  app.get('/metrics', { preHandler: options.metricsPublic ? [] : authorize }, async (_request, reply) => {
    reply.header('content-type', options.metrics.contentType)
    return options.metrics.metrics()
  })

  app.get('/admin/routes', { preHandler: authorize }, async () => {
    const live = options.routes.current()
    return {
      version: live.version,
      appliedAt: live.appliedAt.toISOString(),
      routes: live.table.routes.map((route) => ({
        name: route.name,
        prefix: route.prefix,
        rewritePrefix: route.rewritePrefix ?? null,
        ...(route.split === undefined
          ? { target: route.targets[0]?.upstream }
          : { split: { stickyOn: route.split.stickyOn ?? null, targets: route.targets.map((t) => ({ name: t.name, weight: t.weight, upstream: t.upstream, available: t.available() })) } }),
        methods: route.methods ? [...route.methods] : null,
        timeout: route.timeout,
        loadBalancer: route.loadBalancer,
        websocket: route.websocket,
        source: route.source,
        policies: describePolicies(route),
        instances: route.instances().map((i) => ({ id: i.id, origin: i.origin, weight: i.weight, tags: i.tags })),
        ...operatorView(options.overrides, route.name),
      })),
      sources: live.sources,
      errors: live.sources.flatMap((s) => s.errors.map((e) => ({ ...e, text: `${e.file}:${e.line}: ${e.message}`, kept: s.state }))),
    }
  })

  registerActions(app, options, authorize, operatorOf)
  registerConsole(app, options, authorize)
  return app
}

/** The status page (`GET /`, its script and style: files shipped with the package) and its live feed. */
function registerConsole(app: FastifyInstance, options: AdminOptions, authorize: (request: FastifyRequest, reply: FastifyReply) => Promise<unknown>): void {
  const page = (file: string) => new URL(`../../console/${file}`, import.meta.url)
  // The chart library, from the package's own dependencies: no CDN, nothing to build.
  const uplot = (file: string) => pathToFileURL(createRequire(import.meta.url).resolve(`uplot/dist/${file}`))
  const files: Record<string, URL> = { '/': page('index.html'), '/console.js': page('console.js'), '/console.css': page('console.css'), '/vendor/uplot.js': uplot('uPlot.esm.js'), '/vendor/uplot.css': uplot('uPlot.min.css') }
  const types: Record<string, string> = { html: 'text/html; charset=utf-8', js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8' }
  for (const [path, file] of Object.entries(files)) {
    const body = readFileSync(file, 'utf8')
    // The page holds no data: it asks for the token, then reads the API with it.
    app.get(path, async (_request, reply) =>
      reply.type(types[file.pathname.split('.').pop() ?? 'html'] ?? 'text/plain').header('cache-control', 'no-store').header('content-security-policy', "default-src 'self'; connect-src 'self'").send(body),
    )
  }

  type Filtered = { Querystring: { route?: string | string[] } }
  const filterOf = (request: FastifyRequest<Filtered>): string => String(singleValues(request.query).route ?? '').slice(0, 200)
  app.get<Filtered>('/admin/snapshot', { preHandler: authorize }, async (request) => snapshotOf(options, filterOf(request)))

  const { history } = options
  const shownNames = (filter: string): ReadonlySet<string> => new Set(routesShown(options, filter).shown.map((route) => route.name))
  app.get<Filtered>('/admin/history', { preHandler: authorize }, async (request) => {
    await history.watch()
    return history.summary(shownNames(filterOf(request)))
  })
  app.get<{ Params: { name: string } }>('/admin/routes/:name/history', { preHandler: authorize }, async (request) => {
    const live = options.routes.current()
    if (!live.table.names.has(request.params.name)) throw new GatewayError('not_found', `No route is named "${request.params.name}"`)
    await history.watch()
    const view = history.route(request.params.name)
    const from = view.times[0] ?? 0
    const actions: Mark[] = (await options.audit.list(AUDIT_LENGTH))
      .filter((entry) => entry.route === view.route && Date.parse(entry.at) >= from)
      .map((entry) => ({ at: Date.parse(entry.at), kind: 'operator', text: `${entry.action}${entry.instance ? ` ${entry.instance}` : ''} by ${entry.by}${entry.reason ? `: ${entry.reason}` : ''}` }))
    return { ...view, marks: [...view.marks, ...actions].sort((a, b) => a.at - b.at) }
  })

  // Server-Sent Events, one snapshot a second. The page reads them with fetch (an EventSource cannot send the token).
  // The history comes whole once, then a slot every 5 s as it is final; all of them of the routes the page shows.
  const streams = new Map<FastifyReply, string>()
  const write = (reply: FastifyReply, event: string, data: unknown) => {
    // What is written may be ready after the page went away.
    if (!reply.raw.destroyed && !reply.raw.writableEnded) reply.raw.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`)
  }
  const stopSlots = history.onSlot((slot) => {
    for (const [reply, filter] of streams) {
      const shown = shownNames(filter)
      write(reply, 'slot', { ...slot, routes: Object.fromEntries(Object.entries(slot.routes).filter(([name]) => shown.has(name))) })
    }
  })
  app.get<Filtered>('/admin/events', { preHandler: authorize }, (request, reply) => {
    const filter = filterOf(request)
    reply.hijack()
    reply.raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' })
    streams.set(reply, filter)
    const send = () =>
      void snapshotOf(options, filter).then(
        (snapshot) => write(reply, 'snapshot', snapshot),
        () => undefined,
      )
    send()
    void history.watch().then(
      () => write(reply, 'history', history.summary(shownNames(filter))),
      () => undefined,
    )
    const timer = setInterval(send, 1_000)
    reply.raw.on('close', () => {
      clearInterval(timer)
      streams.delete(reply)
    })
  })
  // Before the server waits for its connections to end: an open page's feed never would, and shutdown would hang on it.
  app.addHook('preClose', async () => {
    stopSlots()
    for (const reply of streams.keys()) reply.raw.end()
  })
}

/** The route's live policy of `key`, if it has one. */
function policyOf(route: LiveRoute, key: string): RoutePolicy | undefined {
  return route.livePolicies.find((p) => p.key === key)?.policy
}

/**
 * A route's cell in a policy's column. A split's per-target policy (its breakers) shows the target that refuses
 * every attempt, if one does, else the first, and names it.
 */
function cellOf(route: LiveRoute, key: string, column: StatusColumn<RoutePolicy>, deps: PolicyDeps): StatusCell | null {
  const own = policyOf(route, key)
  if (own !== undefined || route.split === undefined) return column.cell(own, route.name, deps) ?? null
  const held = route.targets.flatMap((target) => target.livePolicies.filter((p) => p.key === key).map((p) => ({ target: target.name, policy: p.policy })))
  const shown = held.find((h) => h.policy.refusesAll?.() === true) ?? held[0]
  const cell = column.cell(shown?.policy, route.name, deps)
  if (cell === undefined) return null
  return shown === undefined ? cell : { ...cell, note: [`target ${shown.target}`, cell.note].filter((part) => part !== undefined).join(': ') }
}

/** Instance ids a route's policies keep traffic from (an outlier detector's ejections), by the policy that does. */
/** What the status page says a route sends to: its service, static instances, or each split target's share now. */
function targetText(route: LiveRoute): string {
  const sourceText = ({ upstream }: LiveTarget) => (upstream.kind === 'service' ? `service ${upstream.service}` : 'static')
  if (route.split === undefined) return sourceText(route.targets[0] as LiveTarget)
  const targets = route.targets.map((t) => ({ name: t.name, weight: t.weight, available: t.available() }))
  const total = targets.reduce((sum, t) => sum + (t.available ? t.weight : 0), 0)
  const shares = targets.map((t) => `${t.name} ${t.available && total > 0 ? Math.round((t.weight * 100) / total) : 0}%${t.weight > 0 && !t.available ? ' (cannot take requests: its share goes to the others)' : ''}`)
  return `split: ${shares.join(' · ')}`
}

function heldOut(route: LiveRoute, instances: readonly Instance[]): Map<string, string> {
  const out = new Map<string, string>()
  const policies = route.split === undefined ? route.livePolicies : route.targets.flatMap((target) => target.livePolicies)
  for (const { key, policy } of policies) {
    if (!policy.filterInstances) continue
    const admitted = new Set(policy.filterInstances(instances))
    for (const instance of instances) if (!admitted.has(instance) && !out.has(instance.id)) out.set(instance.id, key)
  }
  return out
}

/**
 * What the status page's feed carries each second, at most: consumers (all of them are on /admin/consumers), routes
 * (the page filters by name or prefix for the others; all are on /admin/routes), instances of a route.
 */
const SNAPSHOT_CONSUMERS = 200
const SNAPSHOT_ROUTES = 200
const SNAPSHOT_INSTANCES = 20

/** The routes whose name or prefix holds `filter` (case aside), the first SNAPSHOT_ROUTES of them shown. */
function routesShown(options: AdminOptions, filter: string): { shown: LiveRoute[]; matched: number } {
  const needle = filter.toLowerCase()
  const matched = options.routes.current().table.routes.filter((route) => needle === '' || route.name.toLowerCase().includes(needle) || route.prefix.toLowerCase().includes(needle))
  return { shown: matched.slice(0, SNAPSHOT_ROUTES), matched: matched.length }
}

/**
 * What the status page shows: routes with instances, traffic counts and a cell per policy column (each policy
 * describes its own cells); the fleet; file errors.
 */
async function snapshotOf(options: AdminOptions, filter: string): Promise<Record<string, unknown>> {
  const live = options.routes.current()
  const { shown, matched } = routesShown(options, filter)
  const traffic = new Map(options.traffic().map(({ route, ...counts }) => [route, counts]))
  const { kinds, deps } = options.policies
  const columns = kinds.flatMap((kind) => (kind.column ? [{ key: kind.key, column: kind.column }] : []))
  const { ejections } = options.overrides.snapshot()
  return {
    at: Date.now(),
    replica: options.replicaId,
    tableVersion: live.version,
    bucketBounds: options.bucketBounds,
    health: options.health.report(),
    columns: columns.map(({ column }) => ({ title: column.title, attribute: column.attribute })),
    routeCount: live.table.routes.length,
    routesMatched: matched,
    routes: shown.map((route) => {
      const instances = route.discovered()
      const held = heldOut(route, instances)
      const operatorEjected = ejections[route.name] ?? {}
      return {
        name: route.name,
        prefix: route.prefix,
        target: targetText(route),
        cells: Object.fromEntries(columns.map(({ key, column }) => [column.attribute, cellOf(route, key, column, deps)])),
        traffic: traffic.get(route.name) ?? { requests: 0, errors: 0, buckets: [] },
        instanceCount: instances.length,
        instances: instances.slice(0, SNAPSHOT_INSTANCES).map((i) => ({ id: i.id, origin: i.origin, state: operatorEjected[i.id] ? 'ejected by operator' : held.has(i.id) ? `held out by ${held.get(i.id)}` : 'in rotation' })),
      }
    }),
    consumers: live.consumers.slice(0, SNAPSHOT_CONSUMERS).map((consumer) => ({
      name: consumer.name,
      groups: consumer.groups,
      keys: consumer.apiKeys.length,
      revokedKeys: consumer.apiKeys.filter((hash) => options.overrides.revoked(consumer.name, hash)).length,
      revoked: options.overrides.revoked(consumer.name),
      limits: consumer.limits ?? null,
    })),
    consumerCount: live.consumers.length,
    fleet: await options.fleet().catch(() => []),
    errors: live.sources.flatMap((source) => source.errors.map((e) => `${e.file}:${e.line}: ${e.message}`)),
  }
}

/** An action's query, each parameter once: one given twice is refused, not read as a list the action did not expect. */
function singleValues(query: Readonly<Record<string, string | string[] | undefined>>): Record<string, string | undefined> {
  const values: Record<string, string | undefined> = {}
  for (const [name, value] of Object.entries(query)) {
    if (Array.isArray(value)) throw new GatewayError('bad_request', `"${name}" is given ${value.length} times; give it once`)
    values[name] = value
  }
  return values
}

const KEY_HASH = /^(sha256:)?([0-9a-fA-F]{64})$/

/**
 * The consumers of the consumers files, and the revocation of a key (or of every key of a consumer): fleet-wide within
 * a second through Redis, kept there across restarts, audited; a restore undoes it.
 */
function registerConsumerActions(
  app: FastifyInstance,
  options: AdminOptions,
  authorize: (request: FastifyRequest, reply: FastifyReply) => Promise<unknown>,
  decision: (request: FastifyRequest, body: ActionBody) => { by: string; reason: string | undefined; at: number; until: number | undefined },
  fleetWide: (change: () => Promise<void>) => Promise<void>,
  bodyOf: (request: FastifyRequest) => ActionBody,
): void {
  const { overrides, audit } = options
  const consumerNamed = (name: string): ConsumerDefinition => {
    const consumer = options.routes.current().consumers.find((c) => c.name === name)
    if (!consumer) throw new GatewayError('not_found', `No consumer is named "${name}"`)
    return consumer
  }
  const keyOf = (consumer: ConsumerDefinition, text: string): string => {
    const hash = KEY_HASH.exec(text)?.[2]?.toLowerCase()
    if (hash === undefined || !consumer.apiKeys.includes(hash)) throw new GatewayError('not_found', `Consumer "${consumer.name}" has no key ${text.slice(0, 80)}`)
    return hash
  }
  const view = (consumer: ConsumerDefinition) => ({
    name: consumer.name,
    groups: consumer.groups,
    revoked: overrides.revoked(consumer.name),
    keys: consumer.apiKeys.map((hash) => ({ hash: `sha256:${hash}`, revoked: overrides.revoked(consumer.name, hash) })),
    rateLimit: consumer.limits ?? null,
    source: `${consumer.source.file}:${consumer.source.line}`,
  })
  app.get('/admin/consumers', { preHandler: authorize }, async () => ({ consumers: options.routes.current().consumers.map(view) }))

  const change = async (request: FastifyRequest, consumer: ConsumerDefinition, hash: string | undefined, revoke: boolean) => {
    const made = decision(request, bodyOf(request))
    await fleetWide(() => overrides.setRevocation(consumer.name, hash, revoke ? made : undefined))
    const action = `${revoke ? 'revoke' : 'restore'} ${hash === undefined ? 'consumer' : 'key'}`
    await audit.record({ at: new Date(made.at).toISOString(), by: made.by, action, route: '', consumer: consumer.name, reason: made.reason, detail: hash === undefined ? undefined : { key: `sha256:${hash}` }, replica: options.replicaId })
    return view(consumer)
  }
  app.delete<{ Params: { name: string } }>('/admin/consumers/:name', { preHandler: authorize }, async (request) => change(request, consumerNamed(request.params.name), undefined, true))
  app.delete<{ Params: { name: string; hash: string } }>('/admin/consumers/:name/keys/:hash', { preHandler: authorize }, async (request) => {
    const consumer = consumerNamed(request.params.name)
    return change(request, consumer, keyOf(consumer, request.params.hash), true)
  })
  app.post<{ Params: { name: string } }>('/admin/consumers/:name/restore', { preHandler: authorize }, async (request) => change(request, consumerNamed(request.params.name), undefined, false))
  app.post<{ Params: { name: string; hash: string } }>('/admin/consumers/:name/keys/:hash/restore', { preHandler: authorize }, async (request) => {
    const consumer = consumerNamed(request.params.name)
    return change(request, consumer, keyOf(consumer, request.params.hash), false)
  })
}

const kOperator = Symbol('portico.operator')
type AdminRequest = FastifyRequest & { [kOperator]?: string }

/** What operators forced on a route, for /admin/routes. */
function operatorView(overrides: OperatorOverrides, route: string): Record<string, unknown> {
  const { breakers, ejections } = overrides.snapshot()
  return { ...(breakers[route] ? { forcedBreaker: breakers[route] } : {}), ...(ejections[route] ? { operatorEjected: ejections[route] } : {}) }
}

interface ActionBody {
  readonly state?: unknown
  readonly for?: unknown
  readonly reason?: unknown
}

/** The operator's actions (fleet-wide through Redis, this process without it), each audited, and the fleet's view. */
function registerActions(app: FastifyInstance, options: AdminOptions, authorize: (request: FastifyRequest, reply: FastifyReply) => Promise<unknown>, operatorOf: (request: FastifyRequest) => string): void {
  const { overrides, audit } = options
  const routeNamed = (name: string): LiveRoute => {
    const route = options.routes.current().table.routes.find((r) => r.name === name)
    if (!route) throw new GatewayError('not_found', `No route is named "${name}"`)
    return route
  }
  const decision = (request: FastifyRequest, body: ActionBody) => {
    const reason = body.reason === undefined ? undefined : String(body.reason).slice(0, 500)
    let until: number | undefined
    if (body.for !== undefined) {
      try {
        until = Date.now() + parseDuration(String(body.for))
      } catch (error) {
        throw new GatewayError('bad_request', `"for": ${(error as Error).message}`)
      }
    }
    return { by: operatorOf(request), reason, at: Date.now(), until }
  }
  const fleetWide = async (change: () => Promise<void>) => {
    try {
      await change()
    } catch (error) {
      throw new GatewayError('state_unavailable', `The change could not reach the fleet through Redis (${(error as Error).message}); nothing was changed`, { cause: error })
    }
  }
  const bodyOf = (request: FastifyRequest): ActionBody => (typeof request.body === 'object' && request.body !== null ? (request.body as ActionBody) : {})

  app.post<{ Params: { name: string } }>('/admin/routes/:name/breaker', { preHandler: authorize }, async (request) => {
    const route = routeNamed(request.params.name)
    const body = bodyOf(request)
    if (body.state !== 'open' && body.state !== 'closed' && body.state !== 'auto') throw new GatewayError('bad_request', '"state" must be "open", "closed" or "auto"')
    const made = decision(request, body)
    await fleetWide(() => overrides.setBreaker(route.name, body.state === 'auto' ? undefined : { ...made, state: body.state as 'open' | 'closed' }))
    await audit.record({ at: new Date(made.at).toISOString(), by: made.by, action: `breaker ${body.state}`, route: route.name, reason: made.reason, detail: made.until ? { until: new Date(made.until).toISOString() } : undefined, replica: options.replicaId })
    return { route: route.name, breaker: overrides.breaker(route.name) ?? { state: 'auto' } }
  })

  for (const action of ['eject', 'admit'] as const) {
    app.post<{ Params: { name: string; id: string } }>(`/admin/routes/:name/instances/:id/${action}`, { preHandler: authorize }, async (request) => {
      const route = routeNamed(request.params.name)
      const instance = route.discovered().find((i) => i.id === request.params.id || i.origin === request.params.id)
      if (!instance) throw new GatewayError('not_found', `Route "${route.name}" has no instance "${request.params.id}"`)
      const made = decision(request, bodyOf(request))
      await fleetWide(() => overrides.setEjection(route.name, instance.id, action === 'eject' ? made : undefined))
      await audit.record({ at: new Date(made.at).toISOString(), by: made.by, action, route: route.name, instance: instance.id, reason: made.reason, detail: made.until ? { until: new Date(made.until).toISOString() } : undefined, replica: options.replicaId })
      return { route: route.name, instance: instance.id, origin: instance.origin, ejected: action === 'eject', until: made.until ? new Date(made.until).toISOString() : null }
    })
  }

  for (const kind of options.policies.kinds) for (const action of kind.adminActions ?? []) {
    app.route<{ Params: { name: string }; Querystring: Record<string, string | string[] | undefined> }>({
      method: action.method,
      url: action.url,
      preHandler: authorize,
      handler: async (request) => {
        const route = routeNamed(request.params.name)
        const policy = policyOf(route, kind.key)
        if (!policy) throw new GatewayError('not_found', `Route "${route.name}" ${action.missing}`)
        const upstreamPathOf = (path: string): string => {
          const normalized = normalizePath(path)
          const match = normalized === undefined ? undefined : new RouteTable([route]).match(normalized)
          if (!match) throw new GatewayError('bad_request', `"path": ${JSON.stringify(path)} is not a path of route "${route.name}" (prefix ${route.prefix})`)
          return match.upstreamPath
        }
        const made = decision(request, {})
        const { answer, detail } = await action.run(policy, { route, query: singleValues(request.query), upstreamPathOf })
        await audit.record({ at: new Date(made.at).toISOString(), by: made.by, action: action.audit, route: route.name, detail, replica: options.replicaId })
        return answer
      },
    })
  }

  registerConsumerActions(app, options, authorize, (request, body) => decision(request, body), fleetWide, bodyOf)

  app.get('/admin/fleet', { preHandler: authorize }, async () => ({ self: options.replicaId, replicas: await options.fleet() }))

  app.get<{ Querystring: { limit?: string } }>('/admin/audit', { preHandler: authorize }, async (request) => ({
    entries: await audit.list(Math.min(AUDIT_LENGTH, Math.max(1, Number(request.query.limit) || 100))),
  }))
}
