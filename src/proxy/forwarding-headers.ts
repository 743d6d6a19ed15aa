import type { FastifyRequest } from 'fastify'
import type { IncomingHttpHeaders } from 'node:http'

// RFC 9110 §7.6.1: meaningful for one connection only. `connection` and the names it lists are removed by reply-from.
const HOP_BY_HOP = ['keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'upgrade']

// `delete` turns an object into a slow dictionary; only pay for it when the header is there.
function removeHopByHop(headers: IncomingHttpHeaders): void {
  for (const name of HOP_BY_HOP) if (headers[name] !== undefined) delete headers[name]
}

export interface ForwardingHeaderOptions {
  /** Client-supplied X-Forwarded-* and Forwarded headers are kept (and appended to) only when the client is a trusted proxy. */
  readonly trustProxy: boolean
  readonly preserveHost: boolean
}

/**
 * Headers sent upstream: hop-by-hop headers removed, X-Forwarded-For/-Proto/-Host and X-Request-Id set.
 * Host is the instance's own unless the route preserves the client's; the client's is always in X-Forwarded-Host.
 */
export function upstreamRequestHeaders(request: FastifyRequest, headers: IncomingHttpHeaders, options: ForwardingHeaderOptions): IncomingHttpHeaders {
  removeHopByHop(headers)
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

// The WebSocket client sets its own handshake headers; forwarding the client's would corrupt the upstream handshake.
const WEBSOCKET_HANDSHAKE = /^(sec-websocket-|upgrade$|connection$|host$|content-length$)/

/** Headers for the upstream WebSocket handshake: the client's end-to-end headers plus the forwarding ones. */
export function upstreamWebSocketHeaders(request: FastifyRequest, options: ForwardingHeaderOptions): Record<string, string> {
  const headers: IncomingHttpHeaders = {}
  for (const [name, value] of Object.entries(request.headers)) {
    if (!WEBSOCKET_HANDSHAKE.test(name)) headers[name] = value
  }
  const forwarded = upstreamRequestHeaders(request, headers, { ...options, preserveHost: false })
  return Object.fromEntries(
    Object.entries(forwarded).flatMap(([name, value]) => (value === undefined ? [] : [[name, Array.isArray(value) ? value.join(', ') : value]])),
  )
}
