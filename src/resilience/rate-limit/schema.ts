import { Type, type Static } from '@sinclair/typebox'
import { DURATION_PATTERN, parseDuration } from '../../routes/duration.js'

export const RateLimitSchema = Type.Object(
  {
    key: Type.Optional(
      Type.String({
        pattern: '^(ip|route|header:[A-Za-z0-9!#$%&\'*+.^_`|~-]+)$',
        patternMessage: 'must be "ip", "route" or "header:<Header-Name>"',
        default: 'ip',
        description:
          'Who shares a bucket, per route: `ip` (the client address; X-Forwarded-For only counts with trustProxy), `header:<Name>` (e.g. an API key; requests without it are keyed by IP), or `route` (one bucket for everyone).',
      }),
    ),
    limits: Type.Array(
      Type.Object(
        {
          limit: Type.Integer({ minimum: 1, description: 'Requests allowed per window.' }),
          window: Type.String({
            pattern: DURATION_PATTERN,
            patternMessage: 'must be a duration of whole seconds such as 1s, 1m or 1h',
            description: 'Length of the fixed window.',
          }),
        },
        { additionalProperties: false },
      ),
      { minItems: 1, description: 'One or more limits (e.g. 10 per 1s and 1000 per 1h); a request must pass all of them.' },
    ),
    onRedisDown: Type.Optional(
      Type.Union([Type.Literal('local'), Type.Literal('open'), Type.Literal('closed')], {
        default: 'local',
        description:
          'While Redis is unreachable: `local` enforces each replica\'s share (limit ÷ live replicas, as last counted through Redis) in memory; `open` lets every request through; `closed` answers 503 state_unavailable.',
      }),
    ),
  },
  { additionalProperties: false, description: 'Rate limit for this route, shared by all replicas through Redis (in memory without REDIS_URL). Over the limit: 429 rate_limited.' },
)

export type RateLimitSpec = Static<typeof RateLimitSchema>

export interface RateLimitConfig {
  readonly key: { readonly kind: 'ip' } | { readonly kind: 'route' } | { readonly kind: 'header'; readonly header: string }
  readonly limits: readonly { readonly limit: number; readonly windowMs: number }[]
  readonly onRedisDown: 'local' | 'open' | 'closed'
}

/** The validated config, or the sentence that says why it is not valid. */
export function toRateLimitConfig(spec: RateLimitSpec): RateLimitConfig | string {
  const limits = spec.limits.map((l) => ({ limit: l.limit, windowMs: parseDuration(l.window) }))
  const bad = limits.find((l) => l.windowMs < 1000 || l.windowMs % 1000 !== 0)
  if (bad) return `rateLimit window of ${bad.windowMs} ms must be whole seconds, at least 1s`
  const key = spec.key ?? 'ip'
  return {
    key: key === 'ip' || key === 'route' ? { kind: key } : { kind: 'header', header: key.slice('header:'.length).toLowerCase() },
    limits,
    onRedisDown: spec.onRedisDown ?? 'local',
  }
}

