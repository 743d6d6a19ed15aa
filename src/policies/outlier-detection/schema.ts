import { Type, type Static } from '@sinclair/typebox'
import { DURATION_PATTERN, parseDuration } from '../../kernel/duration.js'
import { schemaDefaults } from '../../kernel/schema-defaults.js'

export const OutlierDetectionSchema = Type.Object(
  {
    consecutiveFailures: Type.Optional(Type.Integer({ minimum: 1, default: 5, description: 'Failures in a row (connect errors, timeouts, 5xx) that eject an instance.' })),
    baseEjectionTime: Type.Optional(
      Type.String({ pattern: DURATION_PATTERN, patternMessage: 'must be a duration such as 30s', default: '30s', description: 'First ejection time; each further ejection of the same instance lasts twice as long (up to 10×).' }),
    ),
    maxEjectionPercent: Type.Optional(Type.Integer({ minimum: 0, maximum: 100, default: 50, description: 'Never eject more than this share of the route\'s instances.' })),
  },
  { additionalProperties: false, description: 'Passive outlier ejection: an instance that keeps failing gets no traffic for a while (per replica).' },
)

export type OutlierDetectionSpec = Static<typeof OutlierDetectionSchema>

export interface OutlierDetectionConfig {
  readonly consecutiveFailures: number
  readonly baseEjectionMs: number
  readonly maxEjectionPercent: number
}

const DEFAULTS = schemaDefaults(OutlierDetectionSchema, ['consecutiveFailures', 'baseEjectionTime', 'maxEjectionPercent'])

export function toOutlierDetectionConfig(spec: OutlierDetectionSpec): OutlierDetectionConfig {
  return {
    consecutiveFailures: spec.consecutiveFailures ?? DEFAULTS.consecutiveFailures,
    baseEjectionMs: parseDuration(spec.baseEjectionTime ?? DEFAULTS.baseEjectionTime),
    maxEjectionPercent: spec.maxEjectionPercent ?? DEFAULTS.maxEjectionPercent,
  }
}
