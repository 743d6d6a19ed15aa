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
const CLAIMS = ['x-real-ip', 'true-client-ip', 'x-client-ip', 'cf-connecting-ip', 'x-original-url', 'x-rewrite-url', 'x-http-method-override', 'x-http-method', 'x-method-override']

// `delete` turns an object into a slow dictionary; only pay for it when the header is there.
function remove(headers: IncomingHttpHeaders, names: readonly string[]): void {
  for (const name of names) if (headers[name] !== undefined) delete headers[name]
}

function removeHopByHop(headers: IncomingHttpHeaders): void {
  const listed = headers.connection
  // `keep-alive` and `close` (nearly every response says one) name no other header: no list to take apart.
  if (typeof listed === 'string' && listed !== 'keep-alive' && listed !== 'close') remove(headers, listed.toLowerCase().split(',').map((name) => name.trim()))
  remove(headers, HOP_BY_HOP)
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
  removeHopByHop(headers)
  remove(headers, REQUEST_ONLY)
  if (!options.trustProxy) remove(headers, CLAIMS)
  const socketAddress = request.socket.remoteAddress ?? ''
  const clientHost = request.headers.host ?? ''
  if (options.trustProxy) {
    const previous = request.headers['x-forwarded-for']
    headers['x-forwarded-for'] = previous ? `${String(previous)}, ${socketAddress}` : socketAddress
    headers['x-forwarded-proto'] = request.protocol
    headers['x-forwarded-host'] = request.headers['x-forwarded-host'] ?? clientHost
  } else {
    delete headers.forwarded
    headers['x-forwarded-for'] = socketAddress
    headers['x-forwarded-proto'] = request.protocol
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
  removeHopByHop(headers)
  headers['x-request-id'] = request.id
  return headers
}
