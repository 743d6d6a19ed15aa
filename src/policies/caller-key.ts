import { createHash } from 'node:crypto'
import { MAX_KEY_LENGTH, parseRequestKey, readRequestKey, type RequestKey } from '../balancer/request-key.js'
import { RequestValue, type PolicyExchange } from './policy.js'

/**
 * The consumer a request was authenticated as: a known consumer's name, or `anonymous:<sub>` for a token whose
 * subject names none. Rate limits with `key: consumer` count under it; the access log and the span show it.
 */
export const CONSUMER = new RequestValue<string>('consumer', { logField: 'consumer', spanAttribute: 'portico.consumer' })

/** Whom a request counts for where it may be keyed by consumer (a rate limit's `key`, a split's `stickyOn`). */
export type CallerKey = RequestKey | { readonly kind: 'consumer' }

/** `consumer` or a request key's text (already validated by a schema), parsed once, when the table is built. */
export const parseCallerKey = (text: string): CallerKey => (text === 'consumer' ? { kind: 'consumer' } : parseRequestKey(text))

/** The key of one request: a request key's, or its consumer's name (a request without one is keyed by its client address). */
export function readCallerKey(key: CallerKey, ex: PolicyExchange): string {
  if (key.kind !== 'consumer') return readRequestKey(key, ex.request)
  const consumer = ex.get(CONSUMER)
  return consumer === undefined ? readRequestKey(BY_IP, ex.request) : consumer.length > MAX_KEY_LENGTH ? `c#${createHash('sha256').update(consumer).digest('base64url')}` : `c:${consumer}`
}

const BY_IP = { kind: 'ip' } as const
