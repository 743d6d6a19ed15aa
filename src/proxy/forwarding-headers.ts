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

// Characters Node refuses in a header value (RFC 9110 §5.5 allows HTAB, SP, VCHAR and obs-text).
const INVALID_VALUE = /[^\t\x20-\x7E\x80-\xFF]/
const INVALID_VALUE_CHARS = /[^\t\x20-\x7E\x80-\xFF]/g

/**
 * Headers returned to the client: the upstream's, less hop-by-hop ones, plus the request id. A value with characters
 * Node would refuse loses them, rather than the response failing.
 */
export function clientResponseHeaders(request: FastifyRequest, headers: IncomingHttpHeaders): IncomingHttpHeaders {
  removeHopByHop(headers)
  for (const name in headers) {
    const value = headers[name]
    if (typeof value === 'string') {
      if (INVALID_VALUE.test(value)) headers[name] = value.replace(INVALID_VALUE_CHARS, '')
    } else if (Array.isArray(value)) {
      headers[name] = value.map((item) => item.replace(INVALID_VALUE_CHARS, ''))
    }
  }
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
