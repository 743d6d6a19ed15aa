import { Type, type Static } from '@sinclair/typebox'
import { DURATION_PATTERN, parseDuration } from '../../kernel/duration.js'
import { schemaDefaults } from '../../kernel/schema-defaults.js'

export const RetrySchema = Type.Object(
  {
    attempts: Type.Optional(Type.Integer({ minimum: 1, maximum: 10, default: 2, description: 'Tries in all, the first included.' })),
    backoff: Type.Optional(
      Type.String({ pattern: DURATION_PATTERN, patternMessage: 'must be a duration such as 25ms', default: '25ms', description: 'Base wait before a retry; doubles per retry, with full jitter.' }),
    ),
    on: Type.Optional(
      Type.Array(Type.Union([Type.Literal('connect-error'), Type.Literal('timeout'), Type.Integer({ minimum: 500, maximum: 599 })]), {
        uniqueItems: true,
        default: ['connect-error', 502, 503],
        description: 'What is retried: connect-error, timeout, and upstream statuses (5xx).',
      }),
    ),
    methods: Type.Optional(
      Type.Array(Type.String({ pattern: '^[A-Z]+$', patternMessage: 'must be an HTTP method in capitals' }), {
        uniqueItems: true,
        default: ['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE'],
        description: 'Methods that may be retried (by default the idempotent ones).',
      }),
    ),
    budgetPercent: Type.Optional(
      Type.Integer({ minimum: 0, maximum: 100, default: 20, description: 'At most this share of the route\'s recent requests may be retries, so retries cannot multiply an outage.' }),
    ),
    deadline: Type.Optional(
      Type.String({ pattern: DURATION_PATTERN, patternMessage: 'must be a duration such as 10s', default: '30s', description: 'One overall deadline for the request across all attempts.' }),
    ),
  },
  {
    additionalProperties: false,
    description: 'Retries to a different instance. A request whose body has started streaming upstream is never retried.',
  },
)

export type RetrySpec = Static<typeof RetrySchema>

export interface RetryConfig {
  readonly attempts: number
  readonly backoffMs: number
  readonly onConnectError: boolean
  readonly onTimeout: boolean
  readonly onStatuses: ReadonlySet<number>
  readonly methods: ReadonlySet<string>
  readonly budgetPercent: number
  readonly deadlineMs: number
}

const DEFAULTS = schemaDefaults(RetrySchema, ['attempts', 'backoff', 'on', 'methods', 'budgetPercent', 'deadline'])

export function toRetryConfig(spec: RetrySpec): RetryConfig {
  const on = spec.on ?? DEFAULTS.on
  return {
    attempts: spec.attempts ?? DEFAULTS.attempts,
    backoffMs: parseDuration(spec.backoff ?? DEFAULTS.backoff),
    onConnectError: on.includes('connect-error'),
    onTimeout: on.includes('timeout'),
    onStatuses: new Set(on.filter((o): o is number => typeof o === 'number')),
    methods: new Set(spec.methods ?? DEFAULTS.methods),
    budgetPercent: spec.budgetPercent ?? DEFAULTS.budgetPercent,
    deadlineMs: parseDuration(spec.deadline ?? DEFAULTS.deadline),
  }
}
