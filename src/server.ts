import { pino, type Logger } from 'pino'
import { readFileSync } from 'node:fs'
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { access, readFile } from 'node:fs/promises'
import { createAdminServer } from './admin/admin-server.js'
import { AuditLog } from './admin/audit-log.js'
import { HealthRegistry } from './admin/health-registry.js'
import { ConfigError, parseAdminTokens, type PorticoConfig } from './kernel/process-config.js'
import { POLICIES } from './policies/index.js'
import { createGateway, type Gateway } from './proxy/gateway.js'
import { createConsulClient } from './discovery/consul-client.js'
import { createSharedState } from './state/shared-state.js'
import { createAccessLog } from './observability/access-log.js'
import { DURATION_BUCKETS, GatewayMetrics } from './observability/metrics.js'
import { createTracing } from './observability/tracing.js'
import { SLOT_FIELDS, SLOT_MS, SLOTS, TrafficHistory } from './observability/traffic-history.js'
import { createFleetHistory, createHostHistory } from './state/fleet-history.js'
import { SPLIT_CHART } from './proxy/compile-route.js'
import { createRedirectServer } from './tls/redirect-server.js'
import { createTlsServing } from './tls/tls-server.js'
import { servingMode } from './workers/serving-mode.js'
import { workerId } from './workers/worker.js'

export interface RunningPortico {
  readonly gateway: Gateway
  readonly health: HealthRegistry
  /** `http(s)://host:port` of the traffic and admin listeners (useful with port 0). */
  readonly url: string
  readonly adminUrl: string
  /** The plain HTTP port that redirects to HTTPS, when there is one. */
  readonly redirectUrl: string | undefined
  /**
   * Fails readiness at once and keeps serving for `shutdownDelayMs` (load balancers stop sending meanwhile), then stops
   * accepting, drains in-flight requests for at most `drainTimeoutMs`, and closes everything.
   */
  shutdown(): Promise<void>
  /** Reopens the access log file (logrotate's SIGUSR1). */
  reopenLogs(): void
}

/** How long a worker being replaced answers with Connection: close before it closes the connections left idle. */
const HAND_OVER_MS = 1_000

/** The policy counters the status page charts, and the split's shares. */
const HISTORY_CHARTS = [...POLICIES.flatMap((kind) => kind.charts ?? []), SPLIT_CHART]

/** In a worker of `--workers`: its number, on every log line and access log line. */
const WORKER = workerId()

/** The package's version, for spans and logs (read once: the CLI runs from dist/, tests from src/). */
const PORTICO_VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version

export function createLogger(level: string): Logger {
  return pino({ level, base: { service: 'portico', ...(WORKER === undefined ? {} : { worker: WORKER, pid: process.pid }) } })
}

export async function startPortico(config: PorticoConfig, logger: Logger = createLogger(config.logLevel)): Promise<RunningPortico> {
  await access(config.routesDir).catch(() => {
    throw new ConfigError(`routes directory ${config.routesDir} does not exist (set --routes or PORTICO_ROUTES)`)
  })
  const health = new HealthRegistry()
  const tls = config.tls ? await createTlsServing({ ...config.tls, logger: logger.child({ component: 'tls' }) }) : undefined
  if (tls) health.register('tls', () => tls.store.health())
  const mode = servingMode(config, createConsulClient(config.consul), logger)
  const { discovery } = mode
  // Its sources are read at scrape time, when the gateway exists.
  const metrics = new GatewayMetrics({
    policyKinds: POLICIES,
    livePolicies: () => gateway.routes.current().table.routes.flatMap((r) => [{ route: r.name, policies: r.livePolicies }, ...(r.split === undefined ? [] : r.targets.map((t) => ({ route: `${r.name}/${t.name}`, policies: t.livePolicies })))]),
    splitTargets: () => gateway.routes.current().table.routes.flatMap((r) => (r.split === undefined ? [] : r.targets.map((t) => ({ route: r.name, target: t.name, available: t.available() })))),
    discovery: () => discovery.health(),
    sharedState: () => (state ? state.health() : { status: 'ok' }),
    routes: () => {
      const live = gateway.routes.current()
      return { version: live.version, routes: live.table.routes.length, refusedSources: live.sources.filter((s) => s.state !== 'applied').length }
    },
    gateway: () => gateway.stats,
    forcedBreakers: () => Object.entries(gateway.overrides.snapshot().breakers).map(([route, b]) => ({ route, state: b.state })),
    redisCommands: () => state?.commandCounts(),
    accessLogDropped: () => accessLog?.dropped() ?? 0,
    ...(tls ? { tls: () => ({ certificates: tls.store.served(), refused: tls.store.refused().size, cut: tls.cut }) } : {}),
  })
  const accessLog = createAccessLog(config.accessLog, logger.child({ component: 'access-log' }), mode.worker)
  const tracing = createTracing(process.env, logger, PORTICO_VERSION)
  const state = config.redisUrl ? createSharedState({ url: config.redisUrl, logger: logger.child({ component: 'redis' }) }) : undefined
  health.register('state', () => (state ? state.health() : { status: 'ok', detail: 'no REDIS_URL: rate limits and breakers are per process, in memory' }))
  const gateway = await createGateway({
    state,
    providers: mode.providers,
    decidedTables: mode.decidedTables,
    logger,
    trustProxy: config.trustProxy,
    maxBodyBytes: config.maxBodyBytes,
    discovery,
    onRequestEnd: accessLog
      ? (record) => {
          metrics.recordRequest(record)
          accessLog.write(record)
        }
      : (record) => metrics.recordRequest(record),
    tracer: tracing?.tracer,
    serverFactory: tls?.serverFactory as Parameters<typeof createGateway>[0]['serverFactory'],
  })

  health.register('discovery', () => discovery.health())
  // What operators forced stays visible where probes and dashboards look; it does not make the replica unready.
  health.register('operator', () => {
    const { breakers, ejections } = gateway.overrides.snapshot()
    const forced = Object.keys(breakers).length + Object.values(ejections).reduce((n, e) => n + Object.keys(e).length, 0)
    return forced === 0 ? { status: 'ok' } : { status: 'ok', detail: `${forced} operator decision(s) in force`, breakers, ejections }
  })
  for (const kind of POLICIES) {
    const check = kind.health?.bind(kind)
    if (check) health.register(kind.key, () => check(gateway.routes.current().table.routes.flatMap((r) => [...r.livePolicies, ...r.targets.flatMap((t) => t.livePolicies)].filter((p) => p.key === kind.key).map((p) => p.policy))))
  }
  await gateway.routes.start()
  health.register('routes', () => {
    const live = gateway.routes.current()
    const refused = live.sources.filter((s) => s.state !== 'applied').map((s) => s.source)
    return {
      status: live.version > 0 ? 'ok' : 'down',
      version: live.version,
      routes: live.table.routes.length,
      ...(refused.length > 0 ? { detail: `refused files keep their last good version: ${refused.join(', ')}`, refused } : {}),
    }
  })

  const historySlots = { slotMs: SLOT_MS, slots: SLOTS, fields: SLOT_FIELDS, knownRoute: (name: string) => gateway.routes.current().table.names.has(name), chartTitles: new Set(HISTORY_CHARTS.map((c) => c.title)) }
  const history = new TrafficHistory({
    totals: () => metrics.routeTotals(),
    events: () => gateway.stats.policyEvents,
    charts: HISTORY_CHARTS,
    table: () => {
      const live = gateway.routes.current()
      return { routes: live.table.names, version: live.version, appliedAt: live.appliedAt, refused: live.sources.filter((s) => s.state !== 'applied').map((s) => s.source) }
    },
    // The fleet's, through Redis; without it, the host's workers' through their primary.
    fleet: state ? createFleetHistory({ state, ...historySlots }) : WORKER === undefined ? undefined : createHostHistory(historySlots),
    logger,
  })
  history.start()

  const startedAt = Date.now()
  const describeSelf = () => ({
    id: state?.replicaId ?? 'local',
    version: PORTICO_VERSION,
    startedAt: new Date(startedAt).toISOString(),
    uptimeSeconds: Math.round((Date.now() - startedAt) / 1000),
    routeTableVersion: gateway.routes.current().version,
    health: health.report().status,
    pid: process.pid,
  })
  state?.describeSelfWith(describeSelf)
  const admin = createAdminServer({
    logger,
    routes: gateway.routes,
    health,
    metrics: metrics.registry,
    tokens: await adminTokens(config),
    metricsPublic: config.metricsPublic,
    overrides: gateway.overrides,
    audit: new AuditLog({ state, logger: logger.child({ component: 'audit' }) }),
    // A replica's own entry is fresh; the others' are as of their last heartbeat (2 s).
    fleet: async () => (state?.isUp() ? (await state.replicas()).map((r) => (r.id === state.replicaId ? describeSelf() : r)) : [describeSelf()]),
    replicaId: state?.replicaId ?? 'local',
    traffic: () => metrics.routeTraffic(),
    bucketBounds: DURATION_BUCKETS,
    history,
    policies: gateway.policies,
  })
  // fastify hands these to node's listen as they are (reusePort too, which its types do not name).
  const listening = await gateway.app.listen(mode.trafficAddress)
  // fastify names the scheme after its own https option, which a server factory does not set.
  const url = tls ? listening.replace(/^http:/, 'https:') : listening
  const adminUrl = await admin.listen(mode.adminAddress)
  const redirect = config.redirectPort === undefined ? undefined : createRedirectServer(Number(new URL(url).port), () => health.report().ready)
  const redirectUrl = redirect && (await listenOn(redirect, config.host, config.redirectPort ?? 0))
  logger.info({ url, adminUrl, routesDir: config.routesDir, ...(tls ? { http2: tls.http2, certificates: tls.store.served().map((c) => c.name) } : {}), ...(redirectUrl ? { redirectUrl } : {}) }, mode.servingMessage)

  let stopping: Promise<void> | undefined
  /** A worker the primary replaces hands over: no delay (no load balancer watches it), kept-alive clients served. */
  const shutdown = (handOver = false) =>
    (stopping ??= (async () => {
      health.shutdown()
      if (handOver) {
        // Busy keep-alive connections get their next answer with Connection: close and move to the other workers;
        // only connections idle since then are closed under a client that might be reusing one.
        gateway.startHandOver()
        await new Promise((resolve) => setTimeout(resolve, HAND_OVER_MS))
      } else if (config.shutdownDelayMs > 0) {
        logger.info({ shutdownDelayMs: config.shutdownDelayMs }, 'shutting down: not ready, still serving while load balancers catch up')
        await new Promise((resolve) => setTimeout(resolve, config.shutdownDelayMs))
      }
      logger.info({ drainTimeoutMs: config.drainTimeoutMs }, 'shutting down: draining in-flight requests')
      let timer: NodeJS.Timeout | undefined
      const deadline = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), config.drainTimeoutMs)
      })
      const drained = await Promise.race([gateway.close({ handOver }).then(() => 'drained' as const), deadline])
      clearTimeout(timer)
      if (drained === 'timeout') {
        logger.warn('drain timeout reached: closing the remaining connections')
        gateway.app.server.closeAllConnections()
      }
      discovery.stop()
      history.stop()
      tls?.stop()
      redirect?.closeAllConnections()
      await new Promise((resolve) => (redirect ? redirect.close(resolve) : resolve(undefined)))
      await state?.close()
      await admin.close()
      await accessLog?.close()
      await tracing?.shutdown()
    })())

  mode.serving(metrics.registry, { url, adminUrl }, () =>
    void shutdown(true).then(
      () => process.exit(0),
      () => process.exit(1),
    ),
  )
  return { gateway, health, url, adminUrl, redirectUrl, shutdown: () => shutdown(), reopenLogs: () => accessLog?.reopen() }
}

function listenOn(server: Server, host: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      const address = server.address() as AddressInfo
      resolve(`http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`)
    })
  })
}

async function adminTokens(config: PorticoConfig): Promise<{ name: string; token: string }[]> {
  const tokens = config.adminToken ? [{ name: 'admin', token: config.adminToken }] : []
  if (config.adminTokensFile) tokens.push(...parseAdminTokens(await readFile(config.adminTokensFile, 'utf8'), config.adminTokensFile))
  return tokens
}

/** SIGHUP reloads route files; SIGUSR1 reopens the access log file; SIGTERM and SIGINT drain and exit 0. */
export function handleSignals(portico: RunningPortico, logger: Logger): void {
  process.on('SIGUSR1', () => {
    logger.info('SIGUSR1: reopening the access log')
    portico.reopenLogs()
  })
  process.on('SIGHUP', () => {
    logger.info('SIGHUP: reloading routes')
    void portico.gateway.routes.reload().catch((error: unknown) => logger.error({ err: error }, 'reload failed'))
  })
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      logger.info({ signal }, 'stopping')
      void portico.shutdown().then(
        () => process.exit(0),
        (error: unknown) => {
          logger.error({ err: error }, 'shutdown failed')
          process.exit(1)
        },
      )
    })
  }
}
