import { createHash, createSecretKey, type KeyObject } from 'node:crypto'
import { jwtVerify, type JWTPayload, type JWTVerifyGetKey, type JWTVerifyOptions } from 'jose'
import { LRUCache } from 'lru-cache'
import type { ConsumerDefinition, LiveConsumers } from '../consumers.js'
import type { PolicyExchange } from '../policy.js'
import type { OperatorOverrides } from '../../state/operator-overrides.js'
import { publicKeyOf, type JwtConfig } from './schema.js'
import type { SharedJwks } from './shared-jwks.js'
import type { Verdict } from './verdict.js'

/** Verified tokens remembered per route (until each one's `exp`): a token sprayer fills at most this many. */
export const MAX_VERIFIED_TOKENS = 10_000
const BEARER = /^bearer +([A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*) *$/i
const HEADER_SAFE = /^[\t\x20-\x7e]*$/
const MAX_CLAIM_HEADER = 4096
const CHALLENGE = 'Bearer realm="portico"'

interface Verified {
  readonly subject: string | undefined
  readonly headers: readonly (readonly [string, string])[]
  readonly kid: string | undefined
}

/**
 * Bearer JWTs: jose verifies signature, `alg` (only the route's list; jose never takes `none`), `exp` (required),
 * `nbf`, `iss` and `aud` with the clock skew; `iat` may not be in the future. A verified token is remembered by its
 * hash until it expires (verifying costs 40–150 µs, a lookup about 1), and dropped when its key leaves the JWKS.
 */
export class JwtMethod {
  readonly #config: JwtConfig
  readonly #options: JWTVerifyOptions
  readonly #key: KeyObject | undefined
  readonly #jwks: SharedJwks | undefined
  readonly #consumers: LiveConsumers
  readonly #overrides: OperatorOverrides
  readonly #verified = new LRUCache<string, Verified>({ max: MAX_VERIFIED_TOKENS })

  constructor(config: JwtConfig, jwks: SharedJwks | undefined, consumers: LiveConsumers, overrides: OperatorOverrides) {
    this.#config = config
    this.#options = { issuer: config.issuer, audience: config.audiences as string[] | undefined, algorithms: config.algorithms as string[], clockTolerance: config.clockSkewS, requiredClaims: ['exp'] }
    const { keys } = config
    this.#key = keys.kind === 'pem' ? publicKeyOf(keys.pem) : keys.kind === 'secret' ? createSecretKey(Buffer.from(keys.secret)) : undefined
    this.#jwks = jwks
    this.#consumers = consumers
    this.#overrides = overrides
  }

  /** Headers the gateway sets upstream from claims: a client's own of these names never pass. */
  get identityHeaders(): Iterable<string> {
    return this.#config.claimsToHeaders.values()
  }

  check(ex: PolicyExchange, done: (verdict: Verdict) => void): void {
    const authorization = ex.request.headers.authorization
    const token = typeof authorization === 'string' ? BEARER.exec(authorization)?.[1] : undefined
    if (token === undefined) return done({ kind: 'absent', challenge: CHALLENGE })
    const hash = createHash('sha256').update(token).digest('base64')
    const known = this.#verified.get(hash)
    if (known && (known.kid === undefined || this.#jwks === undefined || this.#jwks.current()?.kids.has(known.kid) === true)) return done(this.#admit(known))
    this.#verify(token, false).then(
      (verified) => {
        if (typeof verified === 'object' && 'kind' in verified) return done(verified)
        const ttl = verified.expiresAtMs - Date.now()
        if (ttl > 0) this.#verified.set(hash, verified.value, { ttl })
        done(this.#admit(verified.value))
      },
      (error: unknown) => done(refusal(error)),
    )
  }

  #admit(verified: Verified): Verdict {
    const consumer: ConsumerDefinition | undefined = verified.subject === undefined ? undefined : this.#consumers.current.named(verified.subject)
    if (consumer && this.#overrides.revoked(consumer.name)) return { kind: 'refused', method: 'jwt', outcome: 'revoked', detail: `Consumer "${consumer.name}" was revoked`, challenge: invalid('the consumer was revoked') }
    return { kind: 'admitted', method: 'jwt', consumer, name: verified.subject, headers: verified.headers }
  }

  async #verify(token: string, retried: boolean): Promise<{ value: Verified; expiresAtMs: number } | Verdict> {
    let key: KeyObject | JWTVerifyGetKey
    if (this.#jwks) {
      const set = this.#jwks.current() ?? (await this.#jwks.keys())
      if (!set) return { kind: 'unavailable', method: 'jwt', detail: `The identity provider's keys (${this.#jwks.uri}) could not be fetched: ${this.#jwks.stale() ?? 'not yet'}` }
      key = set.resolve
    } else key = this.#key as KeyObject
    try {
      const { payload, protectedHeader } = await jwtVerify(token, key as JWTVerifyGetKey, this.#options)
      if (typeof payload.iat === 'number' && payload.iat > Date.now() / 1000 + this.#config.clockSkewS) return refused('iat', 'The token was issued in the future')
      return { value: { subject: claimText(payload[this.#config.consumerClaim]), headers: this.#claimHeaders(payload), kid: protectedHeader.kid }, expiresAtMs: (payload.exp as number) * 1000 }
    } catch (error) {
      if ((error as { code?: string }).code === 'ERR_JWKS_NO_MATCHING_KEY' && this.#jwks && !retried) {
        await this.#jwks.refetchForUnknownKid()
        return this.#verify(token, true)
      }
      throw error
    }
  }

  #claimHeaders(payload: JWTPayload): [string, string][] {
    const headers: [string, string][] = []
    for (const [claim, header] of this.#config.claimsToHeaders) {
      const text = claimText(payload[claim])
      if (text !== undefined) headers.push([header, HEADER_SAFE.test(text) ? text.slice(0, MAX_CLAIM_HEADER) : encodeURIComponent(text).slice(0, MAX_CLAIM_HEADER)])
    }
    return headers
  }
}

/** A claim as header text: strings as they are, numbers and booleans written out, arrays joined with a space. */
function claimText(value: unknown): string | undefined {
  if (typeof value === 'string') return value
  if (typeof value === 'number' || typeof value === 'boolean') return String(value)
  if (Array.isArray(value)) return value.filter((v) => typeof v === 'string' || typeof v === 'number').join(' ')
  return undefined
}

const invalid = (description: string): string => `${CHALLENGE}, error="invalid_token", error_description="${description}"`

function refused(outcome: string, detail: string): Verdict {
  return { kind: 'refused', method: 'jwt', outcome, detail, challenge: invalid(detail.replaceAll('"', "'")) }
}

/** jose's error as what the client and the metrics are told. */
function refusal(error: unknown): Verdict {
  const code = (error as { code?: string }).code
  const claim = (error as { claim?: string }).claim
  switch (code) {
    case 'ERR_JWT_EXPIRED':
      return refused('expired', 'The token expired')
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      return refused(claim === 'iss' || claim === 'aud' || claim === 'nbf' || claim === 'exp' ? claim : 'claims', claim === 'nbf' ? 'The token is not valid yet' : `The token's "${claim ?? 'claims'}" is not accepted here`)
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return refused('alg', 'The token\'s algorithm is not accepted here')
    case 'ERR_JWKS_NO_MATCHING_KEY':
      return refused('unknown_key', 'The token\'s key is not one of the identity provider\'s')
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return refused('signature', 'The token\'s signature is not valid')
    default:
      return refused('malformed', 'The token cannot be read')
  }
}
