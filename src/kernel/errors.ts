/**
 * Every error the gateway itself answers with, in one table. Each entry's key is its stable `code`, which clients
 * and dashboards may rely on; `type` in the problem body is derived from it.
 * Upstream responses never pass through here: they reach the client unchanged.
 */
export const GatewayErrors = {
  no_route: { status: 404, title: 'No route matches this path' },
  method_not_allowed: { status: 405, title: 'The route does not allow this method' },
  bad_request: { status: 400, title: 'The request is malformed' },
  header_too_large: { status: 431, title: 'The request headers are larger than the gateway accepts' },
  request_timeout: { status: 408, title: 'The request was not received in time' },
  bad_path: { status: 400, title: 'The request path cannot be routed safely' },
  payload_too_large: { status: 413, title: 'The request body is larger than the gateway accepts' },
  unsupported_media_type: { status: 415, title: 'The request body is not of a type this endpoint takes' },
  websocket_not_allowed: { status: 400, title: 'The route does not allow WebSocket upgrades' },
  rate_limited: { status: 429, title: 'Too many requests' },
  too_many_tunnels: { status: 429, title: 'The client has as many WebSocket tunnels open as the route allows' },
  no_instance: { status: 503, title: 'No healthy upstream instance is available' },
  circuit_open: { status: 503, title: 'The upstream circuit breaker is open' },
  concurrency_limited: { status: 503, title: 'The route has as many requests in flight as it allows' },
  state_unavailable: { status: 503, title: 'Shared gateway state is unavailable' },
  shutting_down: { status: 503, title: 'The gateway is shutting down' },
  not_implemented: { status: 501, title: 'The gateway does not implement this' },
  upstream_unreachable: { status: 502, title: 'The upstream could not be reached' },
  upstream_bad_response: { status: 502, title: 'The upstream sent an invalid response' },
  upstream_timeout: { status: 504, title: 'The upstream did not answer in time' },
  worker_unreachable: { status: 502, title: 'A worker process of this host did not answer its primary' },
  unauthorized: { status: 401, title: 'Valid credentials are required' },
  auth_unavailable: { status: 503, title: 'The authentication service or the identity provider\'s keys are unavailable' },
  forbidden: { status: 403, title: 'The request is not allowed here' },
  not_found: { status: 404, title: 'No such admin resource' },
  internal: { status: 500, title: 'The gateway failed unexpectedly' },
} as const satisfies Record<string, { status: number; title: string }>

export type GatewayErrorCode = keyof typeof GatewayErrors

export const PROBLEM_CONTENT_TYPE = 'application/problem+json'
const TYPE_BASE = 'https://portico.dev/problems/'

/** A failure the gateway answers itself; carries its code and status so no caller chooses a status by hand. */
export class GatewayError extends Error {
  readonly code: GatewayErrorCode
  readonly status: number
  /** Extra response headers, e.g. Retry-After. */
  readonly headers: Readonly<Record<string, string>>

  constructor(code: GatewayErrorCode, detail: string, options: { cause?: unknown; headers?: Record<string, string> } = {}) {
    super(detail, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'GatewayError'
    this.code = code
    this.status = GatewayErrors[code].status
    // Every 503 says when to come back (RFC 9110 §10.2.3); one that knows better sets its own.
    this.headers = this.status === 503 && options.headers?.['retry-after'] === undefined ? { ...options.headers, 'retry-after': '1' } : (options.headers ?? {})
  }
}

export interface Problem {
  type: string
  title: string
  status: number
  detail: string
  code: GatewayErrorCode
  instance?: string
  requestId?: string
}

export function toProblem(error: GatewayError, requestId?: string, instance?: string): Problem {
  return {
    type: TYPE_BASE + error.code.replaceAll('_', '-'),
    title: GatewayErrors[error.code].title,
    status: error.status,
    detail: error.message,
    code: error.code,
    ...(instance === undefined ? {} : { instance }),
    ...(requestId === undefined ? {} : { requestId }),
  }
}
