import { createHash } from 'node:crypto'
import { isIP } from 'node:net'

/** Who a request belongs to, for policies that key by source: the rate limit's `key`, consistent-hash's `hashOn`. */
export type RequestKey = { readonly kind: 'ip' } | { readonly kind: 'route' } | { readonly kind: 'header'; readonly header: string }

export const REQUEST_KEY_HEADER_PATTERN = "header:[A-Za-z0-9!#$%&'*+.^_`|~-]+"

/** Keys longer than this are hashed: a client must not make the gateway (or Redis) store 8 KB per key. */
export const MAX_KEY_LENGTH = 64

/** Parses `ip`, `route` or `header:<Name>` (already validated by the schema), once, when the table is built. */
export function parseRequestKey(text: string): RequestKey {
  if (text === 'ip' || text === 'route') return { kind: text }
  return { kind: 'header', header: text.slice('header:'.length).toLowerCase() }
}

/** What a key is read from: fastify's request has these. */
export interface KeyedRequest {
  /** The client address as fastify derives it (from X-Forwarded-For only with trustProxy). */
  readonly ip: string
  readonly socket: { readonly remoteAddress?: string | undefined }
  readonly headers: Readonly<Record<string, string | string[] | undefined>>
}

/**
 * The key of one request. A header key uses the header's first value (a repeated header joined by node with ", "
 * keys like its first occurrence, so repeating it evades nothing); a request without the header is keyed by its
 * client address. No allocation for `ip` and `route`.
 */
export function readRequestKey(key: RequestKey, request: KeyedRequest): string {
  switch (key.kind) {
    case 'ip':
      return clientAddress(request)
    case 'route':
      return '*'
    case 'header': {
      const raw = request.headers[key.header]
      const value = firstValue(Array.isArray(raw) ? raw[0] : raw)
      if (value === undefined) return `ip:${clientAddress(request)}`
      return value.length > MAX_KEY_LENGTH ? `h#${createHash('sha256').update(value).digest('base64url')}` : `h:${value}`
    }
  }
}

/**
 * The client's address as a key. What a trusted proxy put in X-Forwarded-For counts only when it is an address:
 * anything else (a name, junk, kilobytes of text) is keyed by the socket's address instead.
 */
function clientAddress(request: KeyedRequest): string {
  const { ip } = request
  return isIP(ip) !== 0 ? ip : (request.socket.remoteAddress ?? '')
}

function firstValue(value: string | undefined): string | undefined {
  if (value === undefined) return undefined
  const comma = value.indexOf(',')
  const first = (comma === -1 ? value : value.slice(0, comma)).trim()
  return first === '' ? undefined : first
}
