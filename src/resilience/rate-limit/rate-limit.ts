import type { FastifyReply, FastifyRequest } from 'fastify'
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible'
import { GatewayError } from '../../errors.js'
import type { SharedState } from '../../state/shared-state.js'
import { BatchedConsume } from './batched-consume.js'
import type { RateLimitConfig } from './schema.js'

export type RequestPolicy = (request: FastifyRequest, reply: FastifyReply) => Promise<void>

interface Window {
  readonly limit: number
  readonly windowMs: number
  readonly shared: BatchedConsume | undefined
  local: RateLimiterMemory
  localReplicas: number
}

interface Outcome {
  readonly limit: number
  readonly windowMs: number
  readonly remaining: number
  readonly resetMs: number
}

/**
 * A route's rate limit: one fixed-window counter per limit, in Redis when the gateway has one (at most one round trip
 * per limit, all limits in parallel, concurrent requests of a key batched), in memory otherwise. Answers 429 with
 * Retry-After, and sets the RateLimit headers of draft-ietf-httpapi-ratelimit-headers-07 (`RateLimit-Policy`,
 * `RateLimit`) on every response.
 */
export function createRateLimit(route: string, config: RateLimitConfig, state: SharedState | undefined): RequestPolicy {
  const localPoints = (limit: number, replicas: number) => Math.max(1, Math.floor(limit / replicas))
  const windows: Window[] = config.limits.map(({ limit, windowMs }) => {
    const replicas = state ? state.liveReplicas() : 1
    return {
      limit,
      windowMs,
      // `{route}` is a hash tag: with Redis Cluster every key of a route lands in one slot.
      shared: state
        ? new BatchedConsume(
            new RateLimiterRedis({ storeClient: state.redis, points: limit, duration: windowMs / 1000, keyPrefix: `portico:rl:{${route}}:${windowMs}`, rejectIfRedisNotReady: true }),
          )
        : undefined,
      local: new RateLimiterMemory({ points: state ? localPoints(limit, replicas) : limit, duration: windowMs / 1000 }),
      localReplicas: replicas,
    }
  })
  const policyHeader = config.limits.map((l) => `${l.limit};w=${l.windowMs / 1000}`).join(', ')

  const keyOf = (request: FastifyRequest): string => {
    switch (config.key.kind) {
      case 'route':
        return '*'
      case 'ip':
        return request.ip
      case 'header': {
        const value = request.headers[config.key.header]
        return typeof value === 'string' && value !== '' ? `h:${value}` : `ip:${request.ip}`
      }
    }
  }

  /** This replica's share while Redis is away; re-sized when the replica count changed. */
  const localShare = (window: Window): RateLimiterMemory => {
    const replicas = state?.liveReplicas() ?? 1
    if (replicas !== window.localReplicas) {
      window.local = new RateLimiterMemory({ points: localPoints(window.limit, replicas), duration: window.windowMs / 1000 })
      window.localReplicas = replicas
    }
    return window.local
  }

  const consume = async (window: Window, key: string): Promise<Outcome | undefined> => {
    const outcome = (res: RateLimiterRes, limit: number): Outcome => ({ limit, windowMs: window.windowMs, remaining: res.remainingPoints, resetMs: res.msBeforeNext })
    const over = (res: RateLimiterRes, limit: number): never => {
      throw Object.assign(new GatewayError('rate_limited', `More than ${limit} requests in ${window.windowMs / 1000} s`), { outcome: outcome(res, limit) })
    }
    if (!window.shared) return outcome(await window.local.consume(key).catch((res: RateLimiterRes) => over(res, window.limit)), window.limit)
    try {
      return outcome(await window.shared.consume(key), window.limit)
    } catch (error) {
      if (error instanceof RateLimiterRes) return over(error, window.limit)
      switch (config.onRedisDown) {
        case 'open':
          return undefined
        case 'closed':
          throw new GatewayError('state_unavailable', 'Rate limits are unavailable while Redis is unreachable', { cause: error })
        case 'local': {
          const share = localShare(window)
          const limit = share.points
          return outcome(await share.consume(key).catch((res: RateLimiterRes) => over(res, limit)), limit)
        }
      }
    }
  }

  /** The 429 for the refusals of one request: Retry-After from the limit that frees up last. */
  const refusal = (refused: unknown[]): unknown => {
    const limited = refused.filter((e): e is GatewayError & { outcome: Outcome } => e instanceof GatewayError && 'outcome' in e)
    if (limited.length === 0) return refused[0]
    const worst = limited.reduce((a, b) => (a.outcome.resetMs >= b.outcome.resetMs ? a : b))
    const retryAfter = Math.max(1, Math.ceil(worst.outcome.resetMs / 1000))
    return new GatewayError('rate_limited', `${worst.message}; retry in ${retryAfter} s`, {
      headers: { 'retry-after': String(retryAfter), 'ratelimit-policy': policyHeader, ratelimit: header({ ...worst.outcome, remaining: 0 }) },
    })
  }

  const only = windows.length === 1 ? windows[0] : undefined
  return async function rateLimit(request, reply) {
    const key = keyOf(request)
    let tightest: Outcome | undefined
    if (only) {
      // One limit is the common case: no need to gather several answers.
      try {
        tightest = await consume(only, key)
      } catch (error) {
        throw refusal([error])
      }
    } else {
      const results = await Promise.allSettled(windows.map((w) => consume(w, key)))
      const refused = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []))
      if (refused.length > 0) throw refusal(refused)
      for (const r of results) if (r.status === 'fulfilled' && r.value && (!tightest || r.value.remaining < tightest.remaining)) tightest = r.value
    }
    if (!tightest) return
    reply.header('ratelimit-policy', policyHeader)
    reply.header('ratelimit', header(tightest))
  }
}

const header = (o: Outcome): string => `limit=${o.limit}, remaining=${o.remaining}, reset=${Math.max(0, Math.ceil(o.resetMs / 1000))}`
