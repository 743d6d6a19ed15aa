import { Type, type Static } from '@sinclair/typebox'
import { serviceNameSchema, toUpstreamSource, upstreamsSchema, type UpstreamSource } from '../../balancer/upstream-schema.js'
import { DURATION_PATTERN, parseDuration } from '../../kernel/duration.js'
import { schemaDefaults } from '../../kernel/schema-defaults.js'

export const MirrorSchema = Type.Object(
  {
    service: Type.Optional(serviceNameSchema('Consul service whose passing instances get the copies. Exactly one of `service` and `upstreams`.')),
    upstreams: Type.Optional(upstreamsSchema('Static instances that get the copies. Exactly one of `service` and `upstreams`.')),
    percent: Type.Optional(Type.Number({ minimum: 0, maximum: 100, default: 100, description: 'Share of the route\'s requests copied, drawn at random per request.' })),
    maxInFlight: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 10_000, default: 100, description: 'Most copies under way at once on this route, per replica (or worker); more are dropped (counted), never queued.' }),
    ),
    timeout: Type.Optional(Type.String({ pattern: DURATION_PATTERN, patternMessage: 'must be a duration such as 5s', description: 'How long a copy may take before it is given up. Default: the route\'s response timeout.' })),
  },
  {
    additionalProperties: false,
    description:
      'Sends a copy of each request (a `percent` of them), body included, to another service and drops its answer: fire-and-forget, never retried, never counted against the route\'s limits or breaker, and never delaying or failing the client\'s answer. The copy carries `X-Portico-Mirror: <route>`. Cache hits are not copied (they never reach an upstream).',
  },
)

export type MirrorSpec = Static<typeof MirrorSchema>

export interface MirrorConfig {
  readonly source: UpstreamSource
  readonly percent: number
  readonly maxInFlight: number
  /** Undefined: the route's response timeout. */
  readonly timeoutMs: number | undefined
}

const DEFAULTS = schemaDefaults(MirrorSchema, ['percent', 'maxInFlight'])

export function toMirrorConfig(spec: MirrorSpec): MirrorConfig | string {
  if ((spec.service === undefined) === (spec.upstreams === undefined)) return 'mirror: needs exactly one of "service" and "upstreams"'
  return { source: toUpstreamSource(spec), percent: spec.percent ?? DEFAULTS.percent, maxInFlight: spec.maxInFlight ?? DEFAULTS.maxInFlight, timeoutMs: spec.timeout === undefined ? undefined : parseDuration(spec.timeout) }
}
