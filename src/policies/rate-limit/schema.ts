import { Type, type Static } from '@sinclair/typebox'
import { REQUEST_KEY_HEADER_PATTERN } from '../../balancer/request-key.js'
import { parseCallerKey, type CallerKey } from '../caller-key.js'
import { DURATION_PATTERN, parseDuration } from '../../kernel/duration.js'
import { schemaDefaults } from '../../kernel/schema-defaults.js'

const Limit = Type.Integer({ minimum: 1, description: 'Requests allowed per window.' })
const Window = Type.String({
  pattern: DURATION_PATTERN,
  patternMessage: 'must be a duration of whole seconds such as 1s, 1m or 1h',
  description: 'Length of the fixed window.',
})

export const RateLimitSchema = Type.Object(
  {
    key: Type.Optional(
      Type.String({
        pattern: `^(ip|route|consumer|${REQUEST_KEY_HEADER_PATTERN})$`,
        patternMessage: 'must be "ip", "route", "consumer" or "header:<Header-Name>"',
        default: 'ip',
        description:
          "Who shares a bucket, per route: `ip` (the client address; X-Forwarded-For only counts with trustProxy), `consumer` (the caller the route's `auth` established; a consumer with a `rateLimit` of its own gets its limits instead of the route's; requests without one are keyed by IP), `header:<Name>` (requests without it are keyed by IP; values over 64 characters are hashed), or `route` (one bucket for everyone).",
      }),
    ),
    limit: Type.Optional(Type.Integer({ minimum: 1, description: 'Requests allowed per `window` (the one-window form; use `limits` for several).' })),
    window: Type.Optional(Type.String({ ...Window, description: 'Length of the fixed window of `limit`.' })),
    limits: Type.Optional(
      Type.Array(Type.Object({ limit: Limit, window: Window }, { additionalProperties: false }), {
        minItems: 1,
        description: 'Several limits (e.g. 10 per 1s and 1000 per 1h); a request must pass all of them, and one refused uses up none.',
      }),
    ),
    onRedisDown: Type.Optional(
      Type.Union([Type.Literal('local'), Type.Literal('open'), Type.Literal('closed')], {
        default: 'local',
        description:
          'While Redis is unreachable: `local` enforces each replica\'s share (limit ÷ live replicas, as last counted through Redis) in memory; `open` lets every request through; `closed` answers 503 state_unavailable.',
      }),
    ),
  },
  {
    additionalProperties: false,
    description:
      'Rate limit for this route, shared by all replicas through Redis (in memory without REDIS_URL): `limit` and `window`, or a list of `limits`. Over the limit: 429 rate_limited.',
  },
)

export type RateLimitSpec = Static<typeof RateLimitSchema>

/** A consumer's own limits (in a consumers file): the limits of a route's `rateLimit`, without its key or Redis choice. */
export const ConsumerRateLimitSchema = Type.Pick(RateLimitSchema, ['limit', 'window', 'limits'], {
  additionalProperties: false,
  description: 'This consumer\'s own limits: replace the limits of every route whose `rateLimit` has `key: consumer`, for this consumer (the route\'s `onRedisDown` still applies).',
})

export type ConsumerRateLimitSpec = Static<typeof ConsumerRateLimitSchema>

export type LimitWindows = readonly { readonly limit: number; readonly windowMs: number }[]

/** Whom a bucket belongs to: a request key, or the consumer an auth policy established. */
export type RateLimitKey = CallerKey

export interface RateLimitConfig {
  readonly key: RateLimitKey
  readonly limits: LimitWindows
  readonly onRedisDown: 'local' | 'open' | 'closed'
}

const DEFAULTS = schemaDefaults(RateLimitSchema, ['key', 'onRedisDown'])

/** The config with its defaults, or the sentence that says why the spec cannot be used. */
export function toRateLimitConfig(spec: RateLimitSpec): RateLimitConfig | string {
  const limits = toLimitWindows(spec)
  if (typeof limits === 'string') return limits
  return { key: parseCallerKey(spec.key ?? DEFAULTS.key), limits, onRedisDown: spec.onRedisDown ?? DEFAULTS.onRedisDown }
}

/** `limit` and `window`, or `limits`, as windows in milliseconds; or the sentence that refuses them. */
export function toLimitWindows(spec: ConsumerRateLimitSpec): LimitWindows | string {
  const single = spec.limit !== undefined || spec.window !== undefined
  if (single === (spec.limits !== undefined)) return 'rateLimit needs either "limit" and "window", or a list of "limits"'
  if (single && (spec.limit === undefined || spec.window === undefined)) return `rateLimit needs "${spec.limit === undefined ? 'limit' : 'window'}" beside "${spec.limit === undefined ? 'window' : 'limit'}"`
  const specs = spec.limits ?? [{ limit: spec.limit as number, window: spec.window as string }]
  const limits = specs.map((l) => ({ limit: l.limit, windowMs: parseDuration(l.window) }))
  const bad = limits.find((l) => l.windowMs < 1000 || l.windowMs % 1000 !== 0)
  if (bad) return `rateLimit window of ${bad.windowMs} ms must be whole seconds, at least 1s`
  return limits
}

