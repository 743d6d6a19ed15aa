import { GatewayError } from '../../kernel/errors.js'
import { CONSUMER } from '../caller-key.js'
import { PolicyCounter } from '../policy-events.js'
import type { PolicyDeps, PolicyExchange, PolicyKind, RequestGuard, RoutePolicy } from '../policy.js'
import { ApiKeyMethod } from './api-key.js'
import { ForwardMethod } from './forward.js'
import { JwtMethod } from './jwt.js'
import { AuthSchema, toAuthConfig, type AuthConfig, type AuthSpec } from './schema.js'
import { JwksRegistry, type SharedJwks } from './shared-jwks.js'
import type { Verdict } from './verdict.js'

const DECISIONS = new PolicyCounter(
  'portico_auth_decisions_total',
  'Auth decisions by route, method (api_key, jwt, forward; none when no credential came) and outcome: allowed, allowed_on_error, missing, invalid, revoked, expired, signature, alg, iss, aud, nbf, iat, unknown_key, malformed, denied (forward auth said no), forbidden (outside the groups), unavailable.',
  'method',
  'outcome',
)

/** Why a decision refused the request (`expired`, `denied`, …), or undefined for one that let it in. */
function refusalReason(outcome: string): string | undefined {
  const reason = DECISIONS.valuesOf(outcome)[1]
  return reason === 'allowed' || reason === 'allowed_on_error' ? undefined : reason
}

/** What every consumer's request sends upstream of its identity; a client's own headers of these names never pass. */
const CONSUMER_NAME = 'x-consumer-name'
const CONSUMER_GROUPS = 'x-consumer-groups'

interface Method {
  check(ex: PolicyExchange, done: (verdict: Verdict) => void): void
}

interface LiveAuth extends RoutePolicy {
  readonly config: AuthConfig
  readonly jwks: SharedJwks | undefined
}

/** The JWKS of each gateway's routes, shared by the routes that name the same URI. */
const jwksOf = new WeakMap<PolicyDeps, JwksRegistry>()

export const authPolicy: PolicyKind<AuthSpec, AuthConfig, LiveAuth> = {
  key: 'auth',
  schema: AuthSchema,
  toConfig: toAuthConfig,
  create(route, config, deps) {
    let registry = jwksOf.get(deps)
    if (!registry) jwksOf.set(deps, (registry = new JwksRegistry()))
    const jwks = config.jwt?.keys.kind === 'jwks' ? registry.acquire(config.jwt.keys.uri, deps.state, deps.logger) : undefined
    const jwt = config.jwt && new JwtMethod(config.jwt, jwks, deps.consumers, deps.overrides)
    const forward = config.forward && new ForwardMethod(config.forward, deps.consumers)
    const methods: Method[] = [...(config.apiKey ? [new ApiKeyMethod(config.apiKey, deps.consumers, deps.overrides)] : []), ...(jwt ? [jwt] : []), ...(forward ? [forward] : [])]
    const identity = [...new Set([CONSUMER_NAME, CONSUMER_GROUPS, ...(jwt?.identityHeaders ?? []), ...(forward?.identityHeaders ?? [])])]
    void jwks?.keys()
    return {
      config,
      jwks,
      guard: createGuard(route.name, methods, identity, config.groups, deps),
      describe: () => ({ methods: [config.apiKey && 'apiKey', config.jwt && 'jwt', config.forward && 'forward'].filter(Boolean), groups: config.groups ?? null, ...(jwks ? { jwksUri: jwks.uri, jwksStale: jwks.stale() ?? null } : {}) }),
      stop() {
        forward?.stop()
        if (jwks) registry.release(jwks)
      },
    }
  },
  counters: [DECISIONS],
  charts: [{ counter: DECISIONS, title: 'Auth refusals by reason', as: 'series', series: refusalReason }],
  gauges: [{ name: 'portico_auth_jwks_stale', help: 'Whether the JWKS of the route\'s JWT auth is stale (1: its last fetch failed, the last good copy is in use).', aggregator: 'max', read: (auth) => (auth.jwks?.stale() === undefined ? 0 : 1) }],
  column: {
    title: 'Auth',
    attribute: 'auth',
    cell: (auth, route, { events }) => {
      if (!auth) return undefined
      let refused = 0
      for (const [outcome, count] of events.ofRoute(DECISIONS, route)) if (refusalReason(outcome) !== undefined) refused += count
      const stale = auth.jwks?.stale()
      const methods = [auth.config.apiKey && 'key', auth.config.jwt && 'jwt', auth.config.forward && 'forward'].filter(Boolean).join(' · ')
      return { mark: stale ? 'stale' : 'on', text: `${methods} · ${refused} refused`, ...(stale ? { tone: 'warn' as const, note: `JWKS stale: ${stale}` } : {}) }
    },
  },
  health(auths) {
    const stale = auths.flatMap((auth) => (auth.jwks?.stale() !== undefined ? [auth.jwks.uri] : []))
    return stale.length === 0 ? { status: 'ok' } : { status: 'degraded', detail: `JWKS stale (their last good copy in use): ${[...new Set(stale)].join(', ')}` }
  },
}

/** Which refusal the client hears when no method let the request through: the most telling one. */
const WEIGHT: Record<Verdict['kind'], number> = { absent: 0, refused: 1, unavailable: 2, answered: 3, admitted: 4 }

/**
 * The route's guard: each method in turn until one admits the request; then the groups; then the identity headers go
 * upstream, the client's own copies of them removed first. A refused request never reaches an upstream.
 */
function createGuard(route: string, methods: readonly Method[], identity: readonly string[], groups: readonly string[] | undefined, { events }: PolicyDeps): RequestGuard {
  const count = (method: string, outcome: string) => events.count(DECISIONS, route, PolicyCounter.outcome(method, outcome))

  const admit = (ex: PolicyExchange, verdict: Verdict & { kind: 'admitted' }, next: (error?: Error) => void) => {
    const { consumer } = verdict
    if (groups !== undefined && !consumer?.groups.some((g) => groups.includes(g))) {
      count(verdict.method, 'forbidden')
      return next(new GatewayError('forbidden', `${consumer ? `Consumer "${consumer.name}"` : 'The caller'} is not in a group route "${route}" admits (${groups.join(', ')})`))
    }
    if (verdict.name !== undefined) ex.set(CONSUMER, verdict.name)
    if (consumer) {
      ex.setUpstreamHeader(CONSUMER_NAME, consumer.name)
      if (consumer.groups.length > 0) ex.setUpstreamHeader(CONSUMER_GROUPS, consumer.groups.join(', '))
    }
    for (const [name, value] of verdict.headers) ex.setUpstreamHeader(name, value)
    count(verdict.method, verdict.outcome ?? 'allowed')
    next()
  }

  const refuse = (ex: PolicyExchange, verdicts: readonly Verdict[], next: (error?: Error) => void) => {
    const worst = verdicts.reduce((a, b) => (WEIGHT[b.kind] > WEIGHT[a.kind] ? b : a))
    const challenges = verdicts.flatMap((v) => ('challenge' in v && v.challenge !== undefined ? [v.challenge] : []))
    const headers = challenges.length === 0 ? undefined : { 'www-authenticate': challenges.join(', ') }
    switch (worst.kind) {
      case 'answered':
        count(worst.method, 'denied')
        ex.reply.code(worst.status).headers(worst.headers).send(worst.body)
        return
      case 'unavailable':
        count(worst.method, 'unavailable')
        return next(new GatewayError('auth_unavailable', worst.detail))
      case 'refused':
        count(worst.method, worst.outcome)
        // The challenge of the method that refused says why; the others say what else would do.
        return next(new GatewayError('unauthorized', worst.detail, { headers: { 'www-authenticate': [worst.challenge, ...challenges.filter((c) => c !== worst.challenge)].filter(Boolean).join(', ') } }))
      default:
        count('none', 'missing')
        return next(new GatewayError('unauthorized', `Route "${route}" needs credentials`, headers && { headers }))
    }
  }

  return function auth(ex, next) {
    for (const name of identity) ex.setUpstreamHeader(name, undefined)
    const seen: Verdict[] = []
    const attempt = (index: number): void => {
      const method = methods[index]
      if (method === undefined) return refuse(ex, seen, next)
      method.check(ex, (verdict) => {
        if (verdict.kind === 'admitted') return admit(ex, verdict, next)
        seen.push(verdict)
        attempt(index + 1)
      })
    }
    attempt(0)
  }
}
