import { Type, type Static } from '@sinclair/typebox'
import { readFileSync } from 'node:fs'
import { createPublicKey, type KeyObject } from 'node:crypto'
import { DURATION_PATTERN, parseDuration } from '../../kernel/duration.js'
import { schemaDefaults } from '../../kernel/schema-defaults.js'

const HEADER_NAME = "[A-Za-z0-9!#$%&'*+.^_`|~-]+"
const Duration = (description: string, defaultValue: string) =>
  Type.String({ pattern: DURATION_PATTERN, patternMessage: 'must be a duration such as 500ms, 5s or 1m', description, default: defaultValue })
const HeaderName = Type.String({ pattern: `^${HEADER_NAME}$`, patternMessage: 'must be a header name' })

const ASYMMETRIC = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const
const SYMMETRIC = ['HS256', 'HS384', 'HS512'] as const

export const ApiKeySchema = Type.Object(
  {
    in: Type.Optional(
      Type.String({
        pattern: `^(header|query):${HEADER_NAME}$`,
        patternMessage: 'must be "header:<Header-Name>" or "query:<parameter>"',
        default: 'header:X-API-Key',
        description: 'Where the key comes: a request header, or a query parameter (taken out of the query sent upstream).',
      }),
    ),
  },
  { additionalProperties: false, description: 'API keys of the consumers files, looked up by their SHA-256.' },
)

export const JwtSchema = Type.Object(
  {
    issuer: Type.String({ minLength: 1, description: 'The `iss` a token must carry.' }),
    audiences: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { minItems: 1, description: 'A token\'s `aud` must name one of these.' })),
    jwksUri: Type.Optional(
      Type.String({
        pattern: '^https?://',
        patternMessage: 'must be an http:// or https:// URL',
        description: 'The identity provider\'s JWKS: fetched once per fleet (shared through Redis), again on an unknown `kid` at most every 30 s, its last good copy kept while the provider is down.',
      }),
    ),
    publicKeyFile: Type.Optional(Type.String({ minLength: 1, description: 'A PEM public key (SPKI or certificate) instead of a JWKS; read when the route file is.' })),
    secretEnv: Type.Optional(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$', patternMessage: 'must be an environment variable name', description: 'The environment variable holding an HS* secret (at least 32 bytes).' })),
    algorithms: Type.Array(Type.Union([...ASYMMETRIC, ...SYMMETRIC].map((a) => Type.Literal(a))), {
      minItems: 1,
      uniqueItems: true,
      description: 'The `alg`s accepted: asymmetric ones with `jwksUri` or `publicKeyFile`, HS* with `secretEnv` (never both kinds: no key confusion). `none` is never accepted.',
    }),
    clockSkew: Type.Optional(Duration('How far `exp`, `nbf` and `iat` may be off the gateway\'s clock.', '30s')),
    consumerClaim: Type.Optional(Type.String({ minLength: 1, default: 'sub', description: 'The claim naming the consumer: a consumer of that name, else an anonymous one keyed by it.' })),
    claimsToHeaders: Type.Optional(
      Type.Record(Type.String({ minLength: 1 }), HeaderName, {
        default: {},
        description: 'Claims sent upstream as headers (arrays joined with a space); a client\'s own headers of those names never pass.',
      }),
    ),
  },
  { additionalProperties: false, description: 'Bearer JWTs (`Authorization: Bearer <token>`), verified at the edge; a verified token is remembered until it expires.' },
)

export const ForwardSchema = Type.Object(
  {
    url: Type.String({ pattern: '^https?://', patternMessage: 'must be an http:// or https:// URL', description: 'The authorization service: gets the request\'s method, headers and X-Forwarded-Method/-Uri/-Host/-Proto, no body.' }),
    timeout: Type.Optional(Duration('How long to wait for its answer.', '1s')),
    headersToUpstream: Type.Optional(Type.Array(HeaderName, { uniqueItems: true, default: [], description: 'Headers of its 2xx answer sent upstream (a client\'s own never pass).' })),
    cacheFor: Type.Optional(
      Type.String({
        pattern: DURATION_PATTERN,
        patternMessage: 'must be a duration such as 30s',
        description: 'Remember an allowing answer this long, per replica, keyed by the request\'s credentials (its Authorization and Cookie headers; a request with neither is always asked). A credential the service stops allowing passes until then.',
      }),
    ),
    onError: Type.Optional(
      Type.Union([Type.Literal('deny'), Type.Literal('allow')], {
        default: 'deny',
        description: 'When it cannot be reached or times out: `deny` answers 503 auth_unavailable; `allow` lets the request through without an identity.',
      }),
    ),
  },
  { additionalProperties: false, description: 'Forward auth: a 2xx from `url` lets the request through; any other answer goes back to the client as it came.' },
)

export const AuthSchema = Type.Object(
  {
    apiKey: Type.Optional(ApiKeySchema),
    jwt: Type.Optional(JwtSchema),
    forward: Type.Optional(ForwardSchema),
    groups: Type.Optional(
      Type.Array(Type.String({ pattern: '^[A-Za-z0-9._:-]{1,64}$', patternMessage: 'must be 1 to 64 letters, digits and ._:-' }), {
        minItems: 1,
        uniqueItems: true,
        description: 'The consumer must be in one of these groups (403 forbidden otherwise).',
      }),
    ),
  },
  {
    additionalProperties: false,
    description:
      'Who may call this route: any one of the listed methods lets a request through (tried in the order apiKey, jwt, forward). Without a credential, 401 unauthorized with WWW-Authenticate. The upstream gets X-Consumer-Name and X-Consumer-Groups (a client\'s own never pass).',
  },
)

export type AuthSpec = Static<typeof AuthSchema>

export type JwtKeySource =
  | { readonly kind: 'jwks'; readonly uri: string }
  | { readonly kind: 'pem'; readonly pem: string }
  | { readonly kind: 'secret'; readonly env: string; readonly secret: string }

export interface JwtConfig {
  readonly issuer: string
  readonly audiences: readonly string[] | undefined
  readonly keys: JwtKeySource
  readonly algorithms: readonly string[]
  readonly clockSkewS: number
  readonly consumerClaim: string
  /** Claim → lower-case header name. */
  readonly claimsToHeaders: ReadonlyMap<string, string>
}

export interface AuthConfig {
  readonly apiKey: { readonly in: 'header' | 'query'; readonly name: string } | undefined
  readonly jwt: JwtConfig | undefined
  readonly forward:
    | { readonly url: string; readonly timeoutMs: number; readonly headersToUpstream: readonly string[]; readonly onError: 'deny' | 'allow'; readonly cacheForMs: number | undefined }
    | undefined
  readonly groups: readonly string[] | undefined
}

const API_KEY_DEFAULTS = schemaDefaults(ApiKeySchema, ['in'])
const JWT_DEFAULTS = schemaDefaults(JwtSchema, ['clockSkew', 'consumerClaim', 'claimsToHeaders'])
const FORWARD_DEFAULTS = schemaDefaults(ForwardSchema, ['timeout', 'headersToUpstream', 'onError'])
/** RFC 7518 §3.2: an HS key at least as long as the hash. */
const MIN_SECRET_BYTES = 32

export function toAuthConfig(spec: AuthSpec): AuthConfig | string {
  if (spec.apiKey === undefined && spec.jwt === undefined && spec.forward === undefined) return 'auth needs at least one of "apiKey", "jwt" and "forward"'
  const jwt = spec.jwt === undefined ? undefined : toJwtConfig(spec.jwt)
  if (typeof jwt === 'string') return jwt
  const where = spec.apiKey === undefined ? undefined : (spec.apiKey.in ?? API_KEY_DEFAULTS.in)
  const colon = where?.indexOf(':') ?? 0
  return {
    // Header names are case-insensitive, query parameters are not.
    apiKey: where === undefined ? undefined : where.startsWith('header:') ? { in: 'header', name: where.slice(colon + 1).toLowerCase() } : { in: 'query', name: where.slice(colon + 1) },
    jwt,
    forward: spec.forward && {
      url: spec.forward.url,
      timeoutMs: parseDuration(spec.forward.timeout ?? FORWARD_DEFAULTS.timeout),
      headersToUpstream: (spec.forward.headersToUpstream ?? FORWARD_DEFAULTS.headersToUpstream).map((h) => h.toLowerCase()),
      onError: spec.forward.onError ?? FORWARD_DEFAULTS.onError,
      cacheForMs: spec.forward.cacheFor === undefined ? undefined : parseDuration(spec.forward.cacheFor),
    },
    groups: spec.groups,
  }
}

function toJwtConfig(spec: NonNullable<AuthSpec['jwt']>): JwtConfig | string {
  const sources = [spec.jwksUri, spec.publicKeyFile, spec.secretEnv].filter((s) => s !== undefined)
  if (sources.length !== 1) return 'auth.jwt needs exactly one of "jwksUri", "publicKeyFile" and "secretEnv"'
  const symmetric = spec.algorithms.filter((a) => (SYMMETRIC as readonly string[]).includes(a))
  if (spec.secretEnv !== undefined && symmetric.length !== spec.algorithms.length) return 'auth.jwt with "secretEnv" takes HS256, HS384 or HS512 only (an asymmetric alg beside a secret invites key confusion)'
  if (spec.secretEnv === undefined && symmetric.length > 0) return `auth.jwt: ${symmetric.join(', ')} need "secretEnv" (a public key or JWKS is never used as an HMAC secret)`
  const keys = keySource(spec)
  if (typeof keys === 'string') return keys
  return {
    issuer: spec.issuer,
    audiences: spec.audiences,
    keys,
    algorithms: spec.algorithms,
    clockSkewS: Math.round(parseDuration(spec.clockSkew ?? JWT_DEFAULTS.clockSkew) / 1000),
    consumerClaim: spec.consumerClaim ?? JWT_DEFAULTS.consumerClaim,
    claimsToHeaders: new Map(Object.entries(spec.claimsToHeaders ?? JWT_DEFAULTS.claimsToHeaders).map(([claim, header]) => [claim, header.toLowerCase()])),
  }
}

/** Files and the environment are read with the route file, so that a missing key refuses the file, with its line. */
function keySource(spec: NonNullable<AuthSpec['jwt']>): JwtKeySource | string {
  if (spec.jwksUri !== undefined) return { kind: 'jwks', uri: spec.jwksUri }
  if (spec.publicKeyFile !== undefined) {
    try {
      const pem = readFileSync(spec.publicKeyFile, 'utf8')
      publicKeyOf(pem)
      return { kind: 'pem', pem }
    } catch (error) {
      return `auth.jwt.publicKeyFile ${spec.publicKeyFile}: ${(error as Error).message.split('\n')[0]}`
    }
  }
  const env = spec.secretEnv as string
  const secret = process.env[env]
  if (secret === undefined || secret === '') return `auth.jwt.secretEnv: ${env} is not set`
  if (Buffer.byteLength(secret) < MIN_SECRET_BYTES) return `auth.jwt.secretEnv: ${env} holds ${Buffer.byteLength(secret)} bytes; an HS secret needs at least ${MIN_SECRET_BYTES}`
  return { kind: 'secret', env, secret }
}

export function publicKeyOf(pem: string): KeyObject {
  const key = createPublicKey(pem)
  if (key.type !== 'public') throw new Error('is not a public key')
  return key
}
