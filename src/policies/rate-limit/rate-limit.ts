import cluster from 'node:cluster'
import { RateLimiterCluster, RateLimiterClusterMaster, RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible'
import { GatewayError } from '../../kernel/errors.js'
import type { SharedState } from '../../state/shared-state.js'
import { PolicyCounter, type PolicyEvents } from '../policy-events.js'
import { RequestValue, type PolicyExchange, type PolicyKind, type PolicyReply, type RequestGuard, type RoutePolicy } from '../policy.js'
import { CONSUMER, readCallerKey } from '../caller-key.js'
import type { LiveConsumers } from '../consumers.js'
import { SharedConsume } from './shared-consume.js'
import { RateLimitSchema, toRateLimitConfig, type LimitWindows, type RateLimitConfig, type RateLimitSpec } from './schema.js'

/** How the rate limit decided the request (allowed, refused, local_share, fail_open, fail_closed), on its span. */
export const RATE_LIMIT_DECISION = new RequestValue<string>('rateLimit.decision', { spanAttribute: 'portico.rate_limit.decision' })

const DECISIONS = new PolicyCounter('portico_rate_limit_decisions_total', 'Rate-limit decisions by route and outcome: allowed, refused, local_share (admitted on this replica\'s share while Redis is away), fail_open, fail_closed.', 'outcome')

interface LiveRateLimit extends RoutePolicy {
  readonly config: RateLimitConfig
}

export const rateLimitPolicy: PolicyKind<RateLimitSpec, RateLimitConfig, LiveRateLimit> = {
  key: 'rateLimit',
  schema: RateLimitSchema,
  toConfig: toRateLimitConfig,
  create: (route, config, { state, events, consumers }) => ({
    config,
    guard: createRateLimit(route.name, config, state, events, consumers),
    describe: () => ({ key: config.key.kind === 'header' ? `header:${config.key.header}` : config.key.kind, limits: config.limits, onRedisDown: config.onRedisDown }),
  }),
  counters: [DECISIONS],
  charts: [{ counter: DECISIONS, title: 'Rate limit', as: 'series', series: (outcome) => (outcome === 'allowed' ? undefined : outcome) }],
  column: {
    title: 'Limit',
    attribute: 'limit',
    cell: (limit, route, { events }) =>
      limit && { mark: 'limited', text: `${limit.config.limits.map((l) => `${l.limit}/${l.windowMs / 1000}s`).join(', ')} · ${events.ofRoute(DECISIONS, route).get('refused') ?? 0} refused` },
  },
  // Without Redis, the workers of a host count together in their primary.
  holdForHost: () => void new RateLimiterClusterMaster(),
}

interface Window {
  readonly limit: number
  readonly windowMs: number
  readonly shared: SharedConsume | undefined
  local: RateLimiterAbstract
  localReplicas: number
}

interface Windows {
  readonly windows: readonly Window[]
  /** The one window, when there is one: the common case, taken without a Promise.allSettled. */
  readonly only: Window | undefined
  readonly policyHeader: string
}


interface Outcome {
  readonly limit: number
  readonly windowMs: number
  readonly remaining: number
  readonly resetMs: number
  /** Gives the place back when another window refuses the request. */
  readonly giveBack: (() => void) | undefined
  /** Decided on this replica's share of the limit because Redis is away. */
  readonly onLocalShare: boolean
}

/**
 * A route's rate limit: one fixed-window counter per limit, in Redis when the gateway has one (at most one round trip
 * per limit, all limits in parallel, a busy key's requests batched and leased: see SharedConsume), in memory
 * otherwise. Answers 429 with Retry-After, and sets the RateLimit headers of draft-ietf-httpapi-ratelimit-headers-07
 * (`RateLimit-Policy`, `RateLimit`) on every response.
 */
export function createRateLimit(route: string, config: RateLimitConfig, state: SharedState | undefined, events: PolicyEvents, consumers: LiveConsumers): RequestGuard {
  const localPoints = (limit: number, replicas: number) => Math.max(1, Math.floor(limit / replicas))
  // A consumer's own limit counts in the same Redis keys as the route's: only the number allowed differs.
  const windowsOf = (limits: LimitWindows): Windows => {
    const windows = limits.map(({ limit, windowMs }): Window => {
      const replicas = state ? state.liveReplicas() : 1
      return {
        limit,
        windowMs,
        // `{route}` is a hash tag: with Redis Cluster every key of a route lands in one slot.
        shared: state
          ? new SharedConsume(
              new RateLimiterRedis({ storeClient: state.redis, points: limit, duration: windowMs / 1000, keyPrefix: `portico:rl:{${route}}:${windowMs}`, rejectIfRedisNotReady: true }),
              state.redis,
              () => state.liveReplicas(),
              (key) => state.reportJunk(key, `route "${route}": a rate-limit count that was not a number, removed`),
            )
          : undefined,
        local: state ? new RateLimiterMemory({ points: localPoints(limit, replicas), duration: windowMs / 1000 }) : hostLimiter(route, limit, windowMs),
        localReplicas: replicas,
      }
    })
    return { windows, only: windows.length === 1 ? windows[0] : undefined, policyHeader: limits.map((l) => `${l.limit};w=${l.windowMs / 1000}`).join(', ') }
  }
  const routeWindows = windowsOf(config.limits)
  /** Consumers with limits of their own, by name: made on their first request, remade when their limits change. */
  const consumerWindows = new Map<string, { readonly limits: LimitWindows; readonly print: string; readonly windows: Windows }>()
  const windowsFor = (ex: PolicyExchange): Windows => {
    if (config.key.kind !== 'consumer') return routeWindows
    const name = ex.get(CONSUMER)
    const limits = name === undefined ? undefined : consumers.current.named(name)?.limits
    if (limits === undefined) return routeWindows
    let own = consumerWindows.get(name as string)
    if (own?.limits !== limits) {
      // A reload makes new definitions: only a changed limit starts the consumer's counts afresh.
      const print = JSON.stringify(limits)
      consumerWindows.set(name as string, (own = { limits, print, windows: own?.print === print ? own.windows : windowsOf(limits) }))
    }
    return own.windows
  }

  /** This replica's share while Redis is away; re-sized when the replica count changed. */
  const localShare = (window: Window): RateLimiterAbstract => {
    const replicas = state?.liveReplicas() ?? 1
    if (replicas !== window.localReplicas) {
      window.local = new RateLimiterMemory({ points: localPoints(window.limit, replicas), duration: window.windowMs / 1000 })
      window.localReplicas = replicas
    }
    return window.local
  }

  const outcome = (window: Window, res: RateLimiterRes, limit = window.limit, giveBack?: () => void, onLocalShare = false): Outcome => ({
    limit,
    windowMs: window.windowMs,
    remaining: res.remainingPoints,
    resetMs: res.msBeforeNext,
    giveBack,
    onLocalShare,
  })
  const over = (window: Window, res: RateLimiterRes, limit = window.limit): never => {
    throw Object.assign(new GatewayError('rate_limited', `More than ${limit} requests in ${window.windowMs / 1000} s`), { outcome: outcome(window, res, limit) })
  }

  const consume = async (window: Window, key: string, taken = window.shared?.take(key)): Promise<Outcome | undefined> => {
    if (!taken) {
      const local = window.local
      const kept = boundedKey(local, key)
      return outcome(window, await local.consume(kept).catch((res: RateLimiterRes) => over(window, res)), window.limit, () => void local.reward(kept, 1))
    }
    try {
      const res = await taken
      return outcome(window, res, window.limit, () => window.shared?.giveBack(key, res))
    } catch (error) {
      if (error instanceof RateLimiterRes) return over(window, error)
      switch (config.onRedisDown) {
        case 'open':
          return undefined
        case 'closed':
          throw new GatewayError('state_unavailable', 'Rate limits are unavailable while Redis is unreachable', { cause: error })
        case 'local': {
          const share = localShare(window)
          const kept = boundedKey(share, key)
          return outcome(window, await share.consume(kept).catch((res: RateLimiterRes) => over(window, res, share.points)), share.points, () => void share.reward(kept, 1), true)
        }
      }
    }
  }

  /** The 429 for the refusals of one request: Retry-After from the limit that frees up last. */
  const refusal = (refused: unknown[], policyHeader: string): unknown => {
    const limited = refused.filter((e): e is GatewayError & { outcome: Outcome } => e instanceof GatewayError && 'outcome' in e)
    if (limited.length === 0) return refused[0]
    const worst = limited.reduce((a, b) => (a.outcome.resetMs >= b.outcome.resetMs ? a : b))
    const retryAfter = Math.max(1, Math.ceil(worst.outcome.resetMs / 1000))
    return new GatewayError('rate_limited', `${worst.message}; retry in ${retryAfter} s`, {
      headers: { 'retry-after': String(retryAfter), 'ratelimit-policy': policyHeader, ratelimit: header({ ...worst.outcome, remaining: 0 }) },
    })
  }

  /** The request's decision, counted for the metrics and set on the exchange (the request's span shows it). */
  const decided = (ex: PolicyExchange, decision: string) => {
    events.count(DECISIONS, route, decision)
    ex.set(RATE_LIMIT_DECISION, decision)
  }
  const refuse = (ex: PolicyExchange, refused: unknown[], policyHeader: string, next: (error?: Error) => void) => {
    const error = refusal(refused, policyHeader)
    decided(ex, error instanceof GatewayError && error.code === 'state_unavailable' ? 'fail_closed' : 'refused')
    next(error as Error)
  }
  // No outcome: admitted without a count (onRedisDown: open).
  const admittedAs = (tightest: Outcome | undefined): string => (tightest === undefined ? 'fail_open' : tightest.onLocalShare ? 'local_share' : 'allowed')

  const setHeaders = (reply: PolicyReply, tightest: Outcome, policyHeader: string) => {
    reply.header('ratelimit-policy', policyHeader)
    reply.header('ratelimit', header(tightest))
  }
  return function rateLimit(ex, next) {
    const { reply } = ex
    const key = readCallerKey(config.key, ex)
    const { windows, only, policyHeader } = windowsFor(ex)
    if (only) {
      // One limit is the common case, and a place leased from Redis answers at once.
      const taken = only.shared?.take(key)
      if (taken instanceof RateLimiterRes) {
        decided(ex, 'allowed')
        setHeaders(reply, outcome(only, taken), policyHeader)
        return next()
      }
      consume(only, key, taken).then(
        (tightest) => {
          decided(ex, admittedAs(tightest))
          if (tightest) setHeaders(reply, tightest, policyHeader)
          next()
        },
        (error: unknown) => refuse(ex, [error], policyHeader, next),
      )
      return
    }
    Promise.allSettled(windows.map((w) => consume(w, key))).then((results) => {
      const refused = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []))
      if (refused.length > 0) {
        // A refused request uses up nothing: the windows that admitted it get their place back.
        for (const r of results) if (r.status === 'fulfilled') r.value?.giveBack?.()
        return refuse(ex, refused, policyHeader, next)
      }
      let tightest: Outcome | undefined
      for (const r of results) if (r.status === 'fulfilled' && r.value && (!tightest || r.value.remaining < tightest.remaining)) tightest = r.value
      decided(ex, results.some((r) => r.status === 'fulfilled' && r.value?.onLocalShare) ? 'local_share' : admittedAs(tightest))
      if (tightest) setHeaders(reply, tightest, policyHeader)
      next()
    }, next)
  }
}

/**
 * Without Redis, a limit holds per host: in the workers of `--workers`, the primary keeps the counts
 * (rate-limiter-flexible's cluster limiter, one IPC round trip a request); in a process alone, memory.
 */
function hostLimiter(route: string, limit: number, windowMs: number): RateLimiterAbstract {
  const options = { points: limit, duration: windowMs / 1000 }
  if (!cluster.isWorker) return new RateLimiterMemory(options)
  // The primary keeps one counter per prefix, made with the first options it hears: a changed limit is a new prefix.
  const limiter = new RateLimiterCluster({ ...options, keyPrefix: `${route}:${windowMs}:${limit}`, timeoutMs: 1_000 })
  keysSentToPrimary.set(limiter, new SeenKeys(windowMs))
  return limiter
}

/** Distinct keys one in-memory window holds; past it, new keys share one bucket: stricter, never unbounded memory. */
export const MAX_LOCAL_KEYS = 100_000
const OVERFLOW_KEY = '\u0000overflow'

/**
 * The distinct keys a worker sent to the primary's counts in the last window. The primary's store cannot be read from
 * a worker, so each worker bounds what it sends: the primary holds at most MAX_LOCAL_KEYS per worker and window (a key
 * lives there up to a window after this set forgot it: twice that at worst).
 */
class SeenKeys {
  readonly #keys = new Set<string>()
  readonly #windowMs: number
  #forgetAt = 0

  constructor(windowMs: number) {
    this.#windowMs = windowMs
  }

  /** False for a new key past the bound. */
  admit(key: string): boolean {
    const now = Date.now()
    if (now >= this.#forgetAt) {
      this.#keys.clear()
      this.#forgetAt = now + this.#windowMs
    }
    if (this.#keys.has(key)) return true
    if (this.#keys.size >= MAX_LOCAL_KEYS) return false
    this.#keys.add(key)
    return true
  }
}
const keysSentToPrimary = new WeakMap<RateLimiterAbstract, SeenKeys>()

/**
 * The key to count under in memory (this process's or, in a worker, the primary's). rate-limiter-flexible keeps every
 * key (and a timer) until its window ends and has no bound of its own; its store's size is read here (internal: if it
 * ever moves, the bound lapses, nothing breaks, and the test of it fails).
 */
function boundedKey(limiter: RateLimiterAbstract, key: string): string {
  const sent = keysSentToPrimary.get(limiter)
  if (sent) return sent.admit(key) ? key : OVERFLOW_KEY
  const storage = (limiter as unknown as { _memoryStorage?: { _storage?: Map<string, unknown> } })._memoryStorage?._storage
  return storage !== undefined && storage.size >= MAX_LOCAL_KEYS && !storage.has(limiter.getKey(key)) ? OVERFLOW_KEY : key
}

const header = (o: Outcome): string => `limit=${o.limit}, remaining=${o.remaining}, reset=${Math.max(0, Math.ceil(o.resetMs / 1000))}`
