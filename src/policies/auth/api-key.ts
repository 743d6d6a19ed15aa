import { createHash } from 'node:crypto'
import type { LiveConsumers } from '../consumers.js'
import type { PolicyExchange } from '../policy.js'
import type { OperatorOverrides } from '../../state/operator-overrides.js'
import type { AuthConfig } from './schema.js'
import type { Verdict } from './verdict.js'

/** A key is at most this long; a longer one is refused before it is hashed. */
const MAX_KEY_LENGTH = 512

/**
 * API keys: the key's SHA-256 looked up among the consumers' keys (a map lookup, whatever their number; a sprayer of
 * random keys grows nothing), refused when an operator revoked it. The key never goes upstream.
 */
export class ApiKeyMethod {
  readonly #where: NonNullable<AuthConfig['apiKey']>
  readonly #consumers: LiveConsumers
  readonly #overrides: OperatorOverrides
  readonly #challenge: string

  constructor(where: NonNullable<AuthConfig['apiKey']>, consumers: LiveConsumers, overrides: OperatorOverrides) {
    this.#where = where
    this.#consumers = consumers
    this.#overrides = overrides
    this.#challenge = `ApiKey realm="portico", ${where.in}="${where.name}"`
  }

  check(ex: PolicyExchange, done: (verdict: Verdict) => void): void {
    const key = this.#where.in === 'header' ? this.#fromHeader(ex) : this.#fromQuery(ex)
    if (key === undefined) return done({ kind: 'absent', challenge: this.#challenge })
    if (key.length > MAX_KEY_LENGTH) return done(this.#refused('invalid', 'The API key is not valid'))
    const hash = createHash('sha256').update(key).digest('hex')
    const consumer = this.#consumers.current.withKey(hash)
    if (!consumer) return done(this.#refused('invalid', 'The API key is not valid'))
    if (this.#overrides.revoked(consumer.name, hash)) return done(this.#refused('revoked', 'The API key was revoked'))
    done({ kind: 'admitted', method: 'api_key', consumer, name: consumer.name, headers: [] })
  }

  #refused(outcome: string, detail: string): Verdict {
    return { kind: 'refused', method: 'api_key', outcome, detail, challenge: this.#challenge }
  }

  #fromHeader(ex: PolicyExchange): string | undefined {
    const raw = ex.request.headers[this.#where.name]
    const value = (Array.isArray(raw) ? raw[0] : raw)?.trim()
    ex.setUpstreamHeader(this.#where.name, undefined)
    return value === undefined || value === '' ? undefined : value
  }

  /**
   * The key from the query, which then goes upstream without it (the other parameters exactly as they came); the
   * access log and the span show it redacted.
   */
  #fromQuery(ex: PolicyExchange): string | undefined {
    const url = ex.upstreamUrl
    const mark = url.indexOf('?')
    if (mark === -1) return undefined
    let key: string | undefined
    const kept = url
      .slice(mark + 1)
      .split('&')
      .filter((pair) => {
        const equals = pair.indexOf('=')
        if (decoded(equals === -1 ? pair : pair.slice(0, equals)) !== this.#where.name) return true
        const raw = equals === -1 ? '' : pair.slice(equals + 1)
        ex.redact(raw)
        key ??= decoded(raw)
        return false
      })
    if (key === undefined) return undefined
    ex.setUpstreamQuery(kept.join('&'))
    return key === '' ? undefined : key
  }
}

function decoded(text: string): string | undefined {
  try {
    return decodeURIComponent(text.replaceAll('+', ' '))
  } catch {
    return undefined
  }
}
