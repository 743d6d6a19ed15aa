import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import { createHash, timingSafeEqual } from 'node:crypto'
import { GatewayError } from '../kernel/errors.js'
import { answerClientError, installProblemResponses, sendProblem } from '../http/problem-responses.js'
import { describePolicies, type LiveRoute } from '../proxy/gateway.js'
import type { RouteWatcher } from '../config/route-watcher.js'
import type { HealthRegistry } from './health-registry.js'
import type { Registry } from 'prom-client'

export interface AdminOptions {
  readonly logger: FastifyBaseLogger
  readonly routes: RouteWatcher<LiveRoute>
  readonly health: HealthRegistry
  /** Served on /metrics in Prometheus' text format. */
  readonly metrics: Registry
  /** When set, every admin endpoint but /healthz wants `Authorization: Bearer <token>`. */
  readonly token: string | undefined
}

// The auth scheme is case-insensitive (RFC 9110 §11.1).
const BEARER = /^bearer +(\S+) *$/i
const LOCAL_HOST = /^(localhost|\d{1,3}(\.\d{1,3}){3}|\[[0-9a-f:.]+\])(:\d+)?$/i
const digest = (token: string): Buffer => createHash('sha256').update(token).digest()

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
  if (options.token === undefined) {
    app.addHook('onRequest', (request, reply, done) => {
      if (LOCAL_HOST.test(request.headers.host ?? '')) return done()
      sendProblem(reply, new GatewayError('forbidden', 'Without PORTICO_ADMIN_TOKEN the admin port answers only to Host: an IP address or localhost'))
    })
  }

  // Compared as digests: constant time whatever the lengths.
  const expected = options.token === undefined ? undefined : digest(options.token)
  const authorize = async (request: FastifyRequest, reply: FastifyReply) => {
    if (!expected) return
    const offered = BEARER.exec(request.headers.authorization ?? '')?.[1] ?? ''
    if (!timingSafeEqual(digest(offered), expected)) {
      reply.header('www-authenticate', 'Bearer realm="portico-admin"')
      return sendProblem(reply, new GatewayError('unauthorized', 'This admin endpoint needs Authorization: Bearer <PORTICO_ADMIN_TOKEN>'))
    }
  }

  app.get('/healthz', async () => ({ status: 'alive' }))

  app.get('/readyz', { preHandler: authorize }, async (_request, reply) => {
    const report = options.health.report()
    return reply.code(report.ready ? 200 : 503).send(report)
  })

  app.get('/metrics', { preHandler: authorize }, async (_request, reply) => {
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
        target: route.target,
        methods: route.methods ? [...route.methods] : null,
        timeout: route.timeout,
        loadBalancer: route.loadBalancer,
        websocket: route.websocket,
        source: route.source,
        policies: describePolicies(route),
        instances: route.instances().map((i) => ({ id: i.id, origin: i.origin, weight: i.weight, tags: i.tags })),
      })),
      sources: live.sources,
      errors: live.sources.flatMap((s) => s.errors.map((e) => ({ ...e, text: `${e.file}:${e.line}: ${e.message}`, kept: s.state }))),
    }
  })

  return app
}
