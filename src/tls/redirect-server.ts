import { createServer, type Server } from 'node:http'
import { GatewayError, PROBLEM_CONTENT_TYPE, toProblem } from '../kernel/errors.js'
import { VALID_HOST } from '../kernel/host.js'


/** Probes of a load balancer that only speaks plain HTTP to the redirect port get an answer, not a redirect. */
const PROBES = new Set(['/healthz', '/readyz'])

/**
 * The plain HTTP port of a TLS gateway: every request is sent to the same URL over HTTPS (308 keeps the method and
 * body); /healthz and /readyz answer as the admin port's do.
 */
export function createRedirectServer(httpsPort: number, ready: () => boolean): Server {
  const server = createServer({ requireHostHeader: false }, (request, response) => {
    const path = request.url ?? '/'
    const probe = PROBES.has(path.split('?')[0] ?? '')
    if (probe) {
      const up = path.startsWith('/healthz') || ready()
      response.writeHead(up ? 200 : 503, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(JSON.stringify({ status: up ? 'ok' : 'not ready' }))
      return
    }
    const host = request.headers.host
    const match = host === undefined ? null : VALID_HOST.exec(host)
    if (match === null || !path.startsWith('/')) {
      const error = new GatewayError('bad_request', 'A request to the redirect port needs a valid Host and an absolute path')
      response.writeHead(error.status, { 'content-type': PROBLEM_CONTENT_TYPE, 'cache-control': 'no-store', connection: 'close' }).end(JSON.stringify(toProblem(error, undefined, path)))
      return
    }
    const location = `https://${match[1] ?? ''}${httpsPort === 443 ? '' : `:${httpsPort}`}${path}`
    response.writeHead(308, { location, 'content-length': '0', 'cache-control': 'no-store' }).end()
  })
  server.on('clientError', (_error, socket) => socket.destroy())
  return server
}
