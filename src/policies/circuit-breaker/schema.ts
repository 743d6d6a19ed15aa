import { Type, type Static } from '@sinclair/typebox'
import { DURATION_PATTERN, parseDuration } from '../../kernel/duration.js'
import { schemaDefaults } from '../../kernel/schema-defaults.js'

const Duration = (description: string, defaultValue: string) =>
  Type.String({ pattern: DURATION_PATTERN, patternMessage: 'must be a duration such as 500ms, 5s, 1m or 1h', description, default: defaultValue })

export const CircuitBreakerSchema = Type.Object(
  {
    errorThresholdPercentage: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 100, default: 50, description: 'Share of failed requests in the window, across all replicas, that opens the breaker.' }),
    ),
    volumeThreshold: Type.Optional(
      Type.Integer({ minimum: 1, default: 20, description: 'Requests the window must hold, across all replicas, before the breaker may open.' }),
    ),
    window: Type.Optional(Duration('The rolling window failures are counted in.', '10s')),
    resetTimeout: Type.Optional(Duration('How long the breaker stays open before one probe request is let through (fleet-wide).', '30s')),
    failureStatuses: Type.Optional(
      Type.Array(Type.Integer({ minimum: 100, maximum: 599 }), {
        uniqueItems: true,
        default: [500, 502, 503, 504],
        description: 'Upstream statuses that count as failures. Connection errors and timeouts always do.',
      }),
    ),
  },
  {
    additionalProperties: false,
    description: 'Circuit breaker for this route\'s upstream, its state shared by all replicas through Redis. Open: 503 circuit_open with Retry-After, no upstream call.',
  },
)

export type CircuitBreakerSpec = Static<typeof CircuitBreakerSchema>

export interface CircuitBreakerConfig {
  readonly errorThresholdPercentage: number
  readonly volumeThreshold: number
  readonly windowMs: number
  readonly resetTimeoutMs: number
  readonly failureStatuses: ReadonlySet<number>
}

const DEFAULTS = schemaDefaults(CircuitBreakerSchema, ['errorThresholdPercentage', 'volumeThreshold', 'window', 'resetTimeout', 'failureStatuses'])

export function toCircuitBreakerConfig(spec: CircuitBreakerSpec): CircuitBreakerConfig {
  return {
    errorThresholdPercentage: spec.errorThresholdPercentage ?? DEFAULTS.errorThresholdPercentage,
    volumeThreshold: spec.volumeThreshold ?? DEFAULTS.volumeThreshold,
    windowMs: parseDuration(spec.window ?? DEFAULTS.window),
    resetTimeoutMs: parseDuration(spec.resetTimeout ?? DEFAULTS.resetTimeout),
    failureStatuses: new Set(spec.failureStatuses ?? DEFAULTS.failureStatuses),
  }
}
