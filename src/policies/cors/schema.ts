import { Type, type Static } from '@sinclair/typebox'
import { DURATION_PATTERN, parseDuration } from '../../kernel/duration.js'
import { schemaDefaults } from '../../kernel/schema-defaults.js'

const HEADER_NAME = "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"
// An origin as browsers send it (scheme, host, port; no path), with one wildcard label at the left of the host.
const ORIGIN = '^(\\*|null|https?://(\\*\\.)?[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)*(:[0-9]{1,5})?)$'
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const

export const CorsSchema = Type.Object(
  {
    origins: Type.Array(Type.String({ pattern: ORIGIN, patternMessage: 'must be an origin such as https://app.example.com, https://*.example.com (one label), "null" or "*"' }), {
      minItems: 1,
      uniqueItems: true,
      description: 'Origins whose pages may call the route; `*` for any (not with `credentials`).',
    }),
    methods: Type.Optional(
      Type.Array(Type.Union(METHODS.map((m) => Type.Literal(m))), { minItems: 1, uniqueItems: true, default: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'], description: 'Methods a preflight allows.' }),
    ),
    headers: Type.Optional(
      Type.Array(Type.String({ pattern: HEADER_NAME, patternMessage: 'must be a header name' }), {
        uniqueItems: true,
        description: 'Request headers a preflight allows; unset: the ones the preflight asks for.',
      }),
    ),
    exposeHeaders: Type.Optional(Type.Array(Type.String({ pattern: HEADER_NAME, patternMessage: 'must be a header name' }), { uniqueItems: true, default: [], description: 'Response headers the page may read beyond the safelisted ones.' })),
    credentials: Type.Optional(Type.Boolean({ default: false, description: 'Let the page send cookies and Authorization (Access-Control-Allow-Credentials).' })),
    maxAge: Type.Optional(Type.String({ pattern: DURATION_PATTERN, patternMessage: 'must be a duration such as 10m', default: '10m', description: 'How long a browser may keep a preflight\'s answer.' })),
  },
  {
    additionalProperties: false,
    description:
      'CORS: the gateway answers preflights itself (before auth and limits: a preflight carries no credentials) and sets the CORS headers of every answer to an allowed origin, the upstream\'s own replaced.',
  },
)

export type CorsSpec = Static<typeof CorsSchema>

export interface CorsConfig {
  readonly anyOrigin: boolean
  /** Lower-case origins. */
  readonly origins: ReadonlySet<string>
  /** `https://*.example.com` as [`https://`, `.example.com`]. */
  readonly wildcards: readonly (readonly [string, string])[]
  readonly methods: readonly string[]
  readonly headers: readonly string[] | undefined
  readonly exposeHeaders: readonly string[]
  readonly credentials: boolean
  readonly maxAgeS: number
}

const DEFAULTS = schemaDefaults(CorsSchema, ['methods', 'exposeHeaders', 'credentials', 'maxAge'])

export function toCorsConfig(spec: CorsSpec): CorsConfig | string {
  const credentials = spec.credentials ?? DEFAULTS.credentials
  const anyOrigin = spec.origins.includes('*')
  if (anyOrigin && credentials) return 'cors: "*" with "credentials: true" would let every site act with the user\'s cookies; list the origins'
  const named = spec.origins.filter((o) => o !== '*').map((o) => o.toLowerCase())
  return {
    anyOrigin,
    origins: new Set(named.filter((o) => !o.includes('*'))),
    wildcards: named.filter((o) => o.includes('*')).map((o) => [o.slice(0, o.indexOf('*')), o.slice(o.indexOf('*') + 1)] as const),
    methods: spec.methods ?? DEFAULTS.methods,
    headers: spec.headers,
    exposeHeaders: spec.exposeHeaders ?? DEFAULTS.exposeHeaders,
    credentials,
    maxAgeS: Math.round(parseDuration(spec.maxAge ?? DEFAULTS.maxAge) / 1000),
  }
}
