import { GatewayError } from '../../kernel/errors.js'
import { PolicyCounter } from '../policy-events.js'
import type { PolicyExchange, PolicyKind, PolicyReply, PolicyRoute, RoutePolicy } from '../policy.js'
import { CorsSchema, toCorsConfig, type CorsConfig, type CorsSpec } from './schema.js'

const DECISIONS = new PolicyCounter('portico_cors_requests_total', 'Cross-origin requests by route and outcome: preflight (answered by the gateway), allowed, refused (an origin not listed).', 'outcome')

/** What the gateway owns of an answer on a CORS route: an upstream's own values of these never reach the browser. */
const OWNED = ['access-control-allow-origin', 'access-control-allow-credentials', 'access-control-expose-headers', 'access-control-allow-methods', 'access-control-allow-headers', 'access-control-max-age']
const PREFLIGHT_VARY = 'Origin, Access-Control-Request-Method, Access-Control-Request-Headers'

interface LiveCors extends RoutePolicy {
  readonly config: CorsConfig
}

/**
 * CORS (the Fetch standard's protocol): a preflight is answered here, before auth and limits (it carries no
 * credentials, and an upstream never sees it); every answer to an allowed origin, the gateway's own refusals and cache
 * hits included, carries the CORS headers, and an upstream's own are replaced by the route's. A wildcard origin is never combined
 * with credentials (refused at load).
 */
export const corsPolicy: PolicyKind<CorsSpec, CorsConfig, LiveCors> = {
  key: 'cors',
  schema: CorsSchema,
  toConfig: toCorsConfig,
  create: (route, config, { events }) => {
    const allowed = originMatcher(config)
    const count = (outcome: string) => events.count(DECISIONS, route.name, outcome)
    const simpleHeaders = (reply: PolicyReply, origin: string) => {
      // "*" never goes with credentials: the load refuses that pair.
      reply.header('access-control-allow-origin', config.anyOrigin ? '*' : origin)
      if (config.credentials) reply.header('access-control-allow-credentials', 'true')
      if (config.exposeHeaders.length > 0) reply.header('access-control-expose-headers', config.exposeHeaders.join(', '))
    }
    /** The answer's CORS headers are the route's, whoever answers: an upstream's or a stored answer's own are replaced. */
    const shape = (reply: PolicyReply, origin: string | undefined) => {
      for (const name of OWNED) reply.removeHeader(name)
      addVary(reply)
      if (origin !== undefined) simpleHeaders(reply, origin)
    }
    return {
      config,
      answersMethods: ['OPTIONS'],
      guard(ex, next) {
        const { request, reply } = ex
        const preflight = request.method === 'OPTIONS' && request.headers['access-control-request-method'] !== undefined
        if (request.method === 'OPTIONS' && !preflight && !acceptsOptions(route)) return next(notAllowed(route))
        const origin = originOf(ex)
        if (origin === undefined) {
          // Not a cross-origin request; its answer still varies by Origin for the caches on the way.
          ex.beforeAnswer(() => shape(reply, undefined))
          return next()
        }
        if (!allowed(origin)) {
          count('refused')
          if (preflight) return next(new GatewayError('forbidden', `Route "${route.name}" takes no cross-origin requests from ${origin.slice(0, 200)}`, { headers: { vary: PREFLIGHT_VARY } }))
          ex.beforeAnswer(() => shape(reply, undefined))
          return next()
        }
        if (!preflight) {
          count('allowed')
          ex.beforeAnswer(() => shape(reply, origin))
          return next()
        }
        count('preflight')
        const asked = request.headers['access-control-request-headers']
        simpleHeaders(reply, origin)
        reply.removeHeader('access-control-expose-headers')
        reply
          .code(204)
          .headers({
            'access-control-allow-methods': config.methods.join(', '),
            ...(config.headers ? { 'access-control-allow-headers': config.headers.join(', ') } : typeof asked === 'string' && asked !== '' ? { 'access-control-allow-headers': asked } : {}),
            'access-control-max-age': String(config.maxAgeS),
            vary: PREFLIGHT_VARY,
          })
          .send()
      },
      describe: () => ({ origins: config.anyOrigin ? ['*'] : [...config.origins, ...config.wildcards.map(([a, b]) => `${a}*${b}`)], credentials: config.credentials }),
    }
  },
  counters: [DECISIONS],
}

function originOf(ex: PolicyExchange): string | undefined {
  const origin = ex.request.headers.origin
  return typeof origin === 'string' && origin !== '' ? origin : undefined
}

/** An origin the route lists: exactly, under a one-label wildcard, or any with `*`. */
function originMatcher(config: CorsConfig): (origin: string) => boolean {
  return (origin) => {
    if (config.anyOrigin) return true
    const lower = origin.toLowerCase()
    if (config.origins.has(lower)) return true
    for (const [scheme, suffix] of config.wildcards) {
      if (lower.length <= scheme.length + suffix.length || !lower.startsWith(scheme) || !lower.endsWith(suffix)) continue
      const label = lower.slice(scheme.length, lower.length - suffix.length)
      if (/^[a-z0-9-]+$/.test(label)) return true
    }
    return false
  }
}

/** Origin in the answer's Vary beside the upstream's own: a cache must not serve one origin's headers to another. */
function addVary(reply: PolicyReply): void {
  const vary = reply.getHeaders().vary
  const current = Array.isArray(vary) ? vary.join(', ') : vary === undefined ? '' : String(vary)
  if (current === '') reply.header('vary', 'Origin')
  else if (current.trim() !== '*' && !/(^|,)\s*origin\s*(,|$)/i.test(current)) reply.header('vary', `${current}, Origin`)
}

const acceptsOptions = (route: PolicyRoute): boolean => route.methods === undefined || route.methods.has('OPTIONS')

function notAllowed(route: PolicyRoute): GatewayError {
  return new GatewayError('method_not_allowed', `Route "${route.name}" does not accept OPTIONS but for CORS preflights`, { headers: { allow: [...(route.methods ?? [])].join(', ') } })
}
