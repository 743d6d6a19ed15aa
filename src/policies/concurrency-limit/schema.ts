import { Type, type Static } from '@sinclair/typebox'
import { DURATION_PATTERN, parseDuration } from '../../kernel/duration.js'
import { schemaDefaults } from '../../kernel/schema-defaults.js'

const QueueSchema = Type.Object(
  {
    size: Type.Integer({ minimum: 1, description: 'Requests that may wait for a slot (per replica); more answer 503 at once.' }),
    timeout: Type.Optional(
      Type.String({ pattern: DURATION_PATTERN, patternMessage: 'must be a duration such as 500ms or 2s', default: '1s', description: 'How long a request waits for a slot before it answers 503.' }),
    ),
  },
  { additionalProperties: false, description: 'Wait for a slot instead of answering 503 at once.' },
)

export const ConcurrencyLimitSchema = Type.Object(
  {
    limit: Type.Integer({ minimum: 1, description: 'Most requests of this route in flight at its upstreams at once, across all replicas.' }),
    queue: Type.Optional(QueueSchema),
    onRedisDown: Type.Optional(
      Type.Union([Type.Literal('local'), Type.Literal('open'), Type.Literal('closed')], {
        default: 'local',
        description:
          'While Redis is unreachable: `local` holds each replica to its share (limit ÷ live replicas); `open` admits every request; `closed` answers 503 state_unavailable.',
      }),
    ),
  },
  {
    additionalProperties: false,
    description:
      'Concurrency limit for this route, shared by all replicas through Redis (per process without REDIS_URL): never more than `limit` requests in flight at its upstreams. Over it: 503 concurrency_limited with Retry-After.',
  },
)

export type ConcurrencyLimitSpec = Static<typeof ConcurrencyLimitSchema>

export interface ConcurrencyLimitConfig {
  readonly limit: number
  readonly queue: { readonly size: number; readonly timeoutMs: number } | undefined
  readonly onRedisDown: 'local' | 'open' | 'closed'
}

const DEFAULTS = schemaDefaults(ConcurrencyLimitSchema, ['onRedisDown'])
const QUEUE_DEFAULTS = schemaDefaults(QueueSchema, ['timeout'])

export function toConcurrencyLimitConfig(spec: ConcurrencyLimitSpec): ConcurrencyLimitConfig {
  return {
    limit: spec.limit,
    queue: spec.queue && { size: spec.queue.size, timeoutMs: parseDuration(spec.queue.timeout ?? QUEUE_DEFAULTS.timeout) },
    onRedisDown: spec.onRedisDown ?? DEFAULTS.onRedisDown,
  }
}
