import { Type, type Static } from '@sinclair/typebox'
import { DURATION_PATTERN, parseDuration, parseSize, SIZE_PATTERN } from '../../kernel/duration.js'
import { schemaDefaults } from '../../kernel/schema-defaults.js'

const Duration = (description: string, defaultValue: string) =>
  Type.String({ pattern: DURATION_PATTERN, patternMessage: 'must be a duration such as 500ms, 5s, 1m or 1h', description, default: defaultValue })
const Size = (description: string, defaultValue: string) =>
  Type.String({ pattern: SIZE_PATTERN, patternMessage: 'must be a size such as 1048576, 512kb or 10mb', description, default: defaultValue })

const CACHEABLE_METHODS = ['GET', 'HEAD'] as const

export const ResponseCacheSchema = Type.Object(
  {
    ttl: Type.Optional(Duration('How long a response that says nothing about caching stays fresh. An upstream\'s Cache-Control (s-maxage, max-age) or Expires wins when present.', '30s')),
    store: Type.Optional(
      Type.Union([Type.Literal('memory'), Type.Literal('redis')], {
        default: 'memory',
        description: '`memory`: per replica. `redis`: one cache for every replica (needs REDIS_URL; while Redis is away, each replica uses memory).',
      }),
    ),
    methods: Type.Optional(
      Type.Array(Type.Union(CACHEABLE_METHODS.map((m) => Type.Literal(m))), { minItems: 1, uniqueItems: true, default: [...CACHEABLE_METHODS], description: 'Methods whose responses are cached.' }),
    ),
    vary: Type.Optional(
      Type.Array(Type.String({ pattern: '^[A-Za-z0-9!#$%&\'*+.^_`|~-]+$', patternMessage: 'must be a header name' }), {
        uniqueItems: true,
        default: [],
        description: 'Request headers that split the cache key, besides those the upstream names in its Vary.',
      }),
    ),
    maxEntrySize: Type.Optional(Size('Responses larger than this stream through uncached.', '1mb')),
    maxSize: Type.Optional(Size('Bound of the memory store of this route (least recently used entries go first).', '256mb')),
    staleWhileRevalidate: Type.Optional(Duration('After an entry went stale: while one request revalidates it upstream, the others get the stale entry.', '0s')),
    staleIfError: Type.Optional(Duration('After an entry went stale: answer it when the upstream fails, times out, the breaker is open or no instance passes.', '0s')),
  },
  {
    additionalProperties: false,
    description:
      'Response cache for this route (RFC 9111 as a shared cache): fresh entries answer without the upstream, concurrent misses for one key make one upstream request (one per fleet with `store: redis`). Answers carry Age and Cache-Status.',
  },
)

export type ResponseCacheSpec = Static<typeof ResponseCacheSchema>

export interface ResponseCacheConfig {
  readonly ttlMs: number
  readonly store: 'memory' | 'redis'
  readonly methods: ReadonlySet<string>
  /** Lower-case header names. */
  readonly vary: readonly string[]
  readonly maxEntryBytes: number
  readonly maxBytes: number
  readonly staleWhileRevalidateMs: number
  readonly staleIfErrorMs: number
}

const DEFAULTS = schemaDefaults(ResponseCacheSchema, ['ttl', 'store', 'methods', 'vary', 'maxEntrySize', 'maxSize', 'staleWhileRevalidate', 'staleIfError'])

export function toResponseCacheConfig(spec: ResponseCacheSpec): ResponseCacheConfig | string {
  const maxEntryBytes = parseSize(spec.maxEntrySize ?? DEFAULTS.maxEntrySize)
  const maxBytes = parseSize(spec.maxSize ?? DEFAULTS.maxSize)
  if (maxEntryBytes > maxBytes) return `cache.maxEntrySize (${spec.maxEntrySize}) is larger than cache.maxSize (${spec.maxSize ?? DEFAULTS.maxSize})`
  const ttlMs = parseDuration(spec.ttl ?? DEFAULTS.ttl)
  if (ttlMs < 1000) return `cache.ttl must be at least 1s (HTTP counts freshness in seconds)`
  return {
    ttlMs,
    store: spec.store ?? DEFAULTS.store,
    methods: new Set(spec.methods ?? DEFAULTS.methods),
    vary: (spec.vary ?? DEFAULTS.vary).map((name) => name.toLowerCase()).sort(),
    maxEntryBytes,
    maxBytes,
    staleWhileRevalidateMs: parseDuration(spec.staleWhileRevalidate ?? DEFAULTS.staleWhileRevalidate),
    staleIfErrorMs: parseDuration(spec.staleIfError ?? DEFAULTS.staleIfError),
  }
}
