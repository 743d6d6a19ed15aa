import type { FastifyRequest } from 'fastify'
import type { IncomingHttpHeaders } from 'node:http'

// RFC 9110 §7.6.1: meaningful for one connection only, in both directions. On requests reply-from also removes
// `connection` and the names it lists; on responses they go here, so each side's connection is its own business (an
// upstream's `Connection: close` does not close the client's connection, nor keep an HTTP/1.0 client's open).
const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'upgrade']
// `Expect: 100-continue` is answered by the gateway itself (node sends the 100); undici refuses to send it on.
const REQUEST_ONLY = ['expect']
// Headers that claim the client's address, or change what a request means, from whoever sent them: only a trusted
// proxy's count (fastify reads X-Forwarded-For then); from anyone else they are dropped.
const CLAIMS = ['x-real-ip', 'true-client-ip', 'x-client-ip', 'cf-connecting-ip', 'x-original-url', 'x-rewrite-url', 'x-http-method-override', 'x-http-method', 'x-method-override', 'forwarded']

// What the gateway sets itself: from the client, only the gateway's own value goes on.
const SET_BY_GATEWAY = ['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-request-id', 'x-portico-timeout-ms', 'traceparent', 'host']
// WSGI, CGI and PHP read `X_Forwarded_For` and `X-Forwarded-For` as one variable (HTTP_X_FORWARDED_FOR): a name that
// spells a claim or a header the gateway sets with underscores is that header to them, so it never passes (nginx drops
// every underscore name by default; other underscore names pass here).
const UNDERSCORE_SPELLINGS = new Set([...CLAIMS, ...SET_BY_GATEWAY].map((name) => name.replaceAll('-', '_')))
// The schemes a trusted proxy may pass on; anything else (`javascript`) is not a scheme an upstream should build links with.
const FORWARDABLE_PROTOS = new Set(['http', 'https', 'ws', 'wss'])

const NOT_FORWARDED_FROM_TRUSTED = new Set([...HOP_BY_HOP, ...REQUEST_ONLY])
const NOT_FORWARDED_FROM_OTHERS = new Set([...HOP_BY_HOP, ...REQUEST_ONLY, ...CLAIMS])
const NOT_RETURNED = new Set(HOP_BY_HOP)

/**
 * One pass over the headers there are (a handful), not a lookup per name that might be (26 misses cost more than the
 * rest of the header work); `delete` only where one is found, since it turns the object into a slow dictionary.
 */
function removeAll(headers: IncomingHttpHeaders, names: ReadonlySet<string>): void {
  for (const name in headers) if (names.has(name)) delete headers[name]
}

/** `removeAll`, and the underscore spellings of claims and of what the gateway sets (see UNDERSCORE_SPELLINGS). */
function removeAllFromClient(headers: IncomingHttpHeaders, names: ReadonlySet<string>): void {
  for (const name in headers) if (names.has(name) || (name.includes('_') && UNDERSCORE_SPELLINGS.has(name.replaceAll('-', '_')))) delete headers[name]
}

/** The scheme the client used, as a trusted proxy says or the connection shows; an unknown one is the connection's. */
function clientProto(request: FastifyRequest): string {
  const proto = request.protocol
  return FORWARDABLE_PROTOS.has(proto) ? proto : (request.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http'
}

/**
 * The names a `Connection` header lists are hop-by-hop too, in every Connection header a message repeats (undici hands
 * those over as a list). `keep-alive` and `close` (nearly every message says one) name no other header.
 */
function removeConnectionListed(headers: IncomingHttpHeaders): void {
  const field: unknown = headers.connection
  if (field === undefined || field === 'keep-alive' || field === 'close') return
  const listed = Array.isArray(field) ? field.join(',') : String(field)
  for (const name of listed.toLowerCase().split(',')) delete headers[name.trim()]
}

export interface ForwardingHeaderOptions {
  /** Client-supplied X-Forwarded-* and Forwarded headers are kept (and appended to) only when the client is a trusted proxy. */
  readonly trustProxy: boolean
  readonly preserveHost: boolean
}

/**
 * Headers sent upstream: hop-by-hop headers and Expect removed, address and method claims dropped unless the client is
 * a trusted proxy, X-Forwarded-For/-Proto/-Host and X-Request-Id set.
 * Host is the instance's own unless the route preserves the client's; the client's is always in X-Forwarded-Host.
 */
export function upstreamRequestHeaders(request: FastifyRequest, headers: IncomingHttpHeaders, options: ForwardingHeaderOptions): IncomingHttpHeaders {
  removeConnectionListed(headers)
  removeAllFromClient(headers, options.trustProxy ? NOT_FORWARDED_FROM_TRUSTED : NOT_FORWARDED_FROM_OTHERS)
  const socketAddress = request.socket.remoteAddress ?? ''
  const clientHost = request.headers.host ?? ''
  const proto = clientProto(request)
  if (options.trustProxy) {
    const previous = request.headers['x-forwarded-for']
    headers['x-forwarded-for'] = previous ? `${String(previous)}, ${socketAddress}` : socketAddress
    headers['x-forwarded-proto'] = proto
    headers['x-forwarded-host'] = request.headers['x-forwarded-host'] ?? clientHost
  } else {
    headers['x-forwarded-for'] = socketAddress
    headers['x-forwarded-proto'] = proto
    headers['x-forwarded-host'] = clientHost
  }
  headers['x-request-id'] = request.id
  if (options.preserveHost && clientHost) headers.host = clientHost
  return headers
}

/**
 * Headers returned to the client: the upstream's, less hop-by-hop ones, plus the request id. Values need no
 * sanitising: undici refuses a response whose header values Node could not send (a 502 upstream_bad_response).
 */
export function clientResponseHeaders(headers: IncomingHttpHeaders, request: FastifyRequest): IncomingHttpHeaders {
  removeConnectionListed(headers)
  removeAll(headers, NOT_RETURNED)
  headers['x-request-id'] = request.id
  return headers
}
