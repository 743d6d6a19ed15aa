import { createHash } from 'node:crypto'
import { isIP } from 'node:net'

/** Who a request belongs to, for what keys by source: the rate limit's `key`, consistent-hash's `hashOn`, a split's `stickyOn`. */
export type RequestKey =
  | { readonly kind: 'ip' }
  | { readonly kind: 'route' }
  | { readonly kind: 'header'; readonly header: string }
  | { readonly kind: 'cookie'; readonly cookie: string }

export const REQUEST_KEY_HEADER_PATTERN = "header:[A-Za-z0-9!#$%&'*+.^_`|~-]+"
// RFC 6265's cookie-name: a token.
export const REQUEST_KEY_COOKIE_PATTERN = "cookie:[A-Za-z0-9!#$%&'*+.^_`|~-]+"

/** Keys longer than this are hashed: a client must not make the gateway (or Redis) store 8 KB per key. */
export const MAX_KEY_LENGTH = 64

/** Parses `ip`, `route`, `header:<Name>` or `cookie:<name>` (already validated by the schema), once, when the table is built. */
export function parseRequestKey(text: string): RequestKey {
  if (text === 'ip' || text === 'route') return { kind: text }
  if (text.startsWith('cookie:')) return { kind: 'cookie', cookie: text.slice('cookie:'.length) }
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
 * keys like its first occurrence, so repeating it evades nothing); a cookie key the cookie's first value (names are
 * case-sensitive); a request without the header or cookie is keyed by its client address. No allocation for `ip` and
 * `route`.
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
    case 'cookie': {
      const value = cookieValue(request.headers.cookie, key.cookie)
      if (value === undefined) return `ip:${clientAddress(request)}`
      return value.length > MAX_KEY_LENGTH ? `k#${createHash('sha256').update(value).digest('base64url')}` : `k:${value}`
    }
  }
}

/** The first value of cookie `name` in a Cookie header (`a=1; b=2`); undefined when absent or empty. */
function cookieValue(header: string | string[] | undefined, name: string): string | undefined {
  const text = Array.isArray(header) ? header.join('; ') : header
  if (text === undefined) return undefined
  for (const pair of text.split(';')) {
    const equals = pair.indexOf('=')
    if (equals === -1 || pair.slice(0, equals).trim() !== name) continue
    const value = pair.slice(equals + 1).trim()
    const unquoted = value.length >= 2 && value.startsWith('"') && value.endsWith('"') ? value.slice(1, -1) : value
    return unquoted === '' ? undefined : unquoted
  }
  return undefined
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
