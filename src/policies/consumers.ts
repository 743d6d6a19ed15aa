import { Type, type Static } from '@sinclair/typebox'
import { schemaDefaults } from '../kernel/schema-defaults.js'
import { ConsumerRateLimitSchema, toLimitWindows } from './rate-limit/schema.js'

const NAME = '^[A-Za-z0-9._@|:+-]{1,128}$'

export const ConsumerSchema = Type.Object(
  {
    name: Type.String({
      pattern: NAME,
      patternMessage: 'must be 1 to 128 letters, digits and ._@|:+-',
      description: 'The consumer\'s name: what the access log, the metrics and `rateLimit: { key: consumer }` know it by. A JWT whose subject (or `consumerClaim`) equals it is this consumer.',
    }),
    groups: Type.Optional(
      Type.Array(Type.String({ pattern: '^[A-Za-z0-9._:-]{1,64}$', patternMessage: 'must be 1 to 64 letters, digits and ._:-' }), {
        uniqueItems: true,
        default: [],
        description: 'Groups the consumer is in: a route whose `auth.groups` names none of them answers it 403 forbidden.',
      }),
    ),
    apiKeys: Type.Optional(
      Type.Array(
        Type.String({
          pattern: '^sha256:[0-9a-fA-F]{64}$',
          patternMessage: 'must be "sha256:" and the key\'s 64 hex digits (`portico key new --consumer NAME` prints the line); a key itself never goes in a file',
        }),
        { uniqueItems: true, default: [], description: 'The SHA-256 of each of the consumer\'s API keys, as `sha256:<hex>`.' },
      ),
    ),
    rateLimit: Type.Optional(ConsumerRateLimitSchema),
  },
  { additionalProperties: false },
)

export type ConsumerSpec = Static<typeof ConsumerSchema>

const DEFAULTS = schemaDefaults(ConsumerSchema, ['groups', 'apiKeys'])

/** A consumer of a file, its defaults applied; or the sentence that refuses it. */
export function toConsumerDefinition(spec: ConsumerSpec, source: ConsumerDefinition['source']): ConsumerDefinition | string {
  const limits = spec.rateLimit === undefined ? undefined : toLimitWindows(spec.rateLimit)
  if (typeof limits === 'string') return `consumer "${spec.name}": ${limits}`
  return { name: spec.name, groups: spec.groups ?? DEFAULTS.groups, apiKeys: (spec.apiKeys ?? DEFAULTS.apiKeys).map((key) => key.slice('sha256:'.length).toLowerCase()), limits, source }
}

/** A window of a consumer's own rate limit: replaces the route's limits for this consumer. */
export interface ConsumerLimit {
  readonly limit: number
  readonly windowMs: number
}

/** A caller the operators know, from a consumers file (`consumers:` in the routes directory). */
export interface ConsumerDefinition {
  readonly name: string
  readonly groups: readonly string[]
  /** Lower-case hex SHA-256 of each API key (the file holds `sha256:<hex>`; never a key itself). */
  readonly apiKeys: readonly string[]
  readonly limits: readonly ConsumerLimit[] | undefined
  readonly source: { readonly file: string; readonly line: number }
}


/** The consumers of one table, looked up by name and by key hash: built once per table, read per request. */
export class ConsumerDirectory {
  readonly consumers: readonly ConsumerDefinition[]
  readonly #byName: ReadonlyMap<string, ConsumerDefinition>
  readonly #byKey: ReadonlyMap<string, ConsumerDefinition>

  constructor(consumers: readonly ConsumerDefinition[]) {
    this.consumers = consumers
    this.#byName = new Map(consumers.map((c) => [c.name, c]))
    this.#byKey = new Map(consumers.flatMap((c) => c.apiKeys.map((hash) => [hash, c] as const)))
  }

  named(name: string): ConsumerDefinition | undefined {
    return this.#byName.get(name)
  }

  /** The consumer holding the key whose SHA-256 is `hash` (lower-case hex). */
  withKey(hash: string): ConsumerDefinition | undefined {
    return this.#byKey.get(hash)
  }
}

/** The directory live now: swapped in with each table, so a request reads the consumers of the table it matched in. */
export class LiveConsumers {
  current = new ConsumerDirectory([])
}
