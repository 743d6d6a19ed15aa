import { randomBytes } from 'node:crypto'
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https'
import { Http2ServerResponse, createSecureServer, type Http2SecureServer, type ServerHttp2Session } from 'node:http2'
import { Server as HttpServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { ConfigError } from '../kernel/process-config.js'
import type { Logger } from '../kernel/logger.js'
import { TLS_DEFAULTS, type ServedCertificate } from './certificate.js'
import { CertificateStore, type CertificateSource } from './certificate-store.js'
import { HTTP2_LIMITS, limitHttp2Sessions, type Http2CutReason } from './http2-limits.js'

/** Session ticket keys are replaced this often: a stolen key decrypts at most this much recorded traffic. */
const TICKET_KEYS_EVERY_MS = 60 * 60_000

export interface TlsServingOptions {
  readonly source: CertificateSource
  /** ALPN h2 and http/1.1 on the one port; false: HTTPS over HTTP/1.1 only. */
  readonly http2: boolean
  /** An HTTP/2 stream whose client takes no byte of its answer for this long is cut. */
  readonly http2StallMs: number
  readonly logger: Logger
}

/** What fastify needs to build a TLS listener, and the certificates and counts behind it. */
export interface TlsServing {
  readonly store: CertificateStore
  readonly http2: boolean
  /** Connections and streams cut by the HTTP/2 limits, by reason. */
  readonly cut: ReadonlyMap<Http2CutReason, number>
  /** fastify's `serverFactory`: the server it listens with. */
  serverFactory(handler: (request: IncomingMessage, response: ServerResponse) => void, options: FastifyServerTimeouts): HttpsServer | Http2SecureServer
  stop(): void
}

interface FastifyServerTimeouts {
  readonly keepAliveTimeout?: number
  readonly requestTimeout?: number
  readonly connectionTimeout?: number
}

/**
 * Reads the certificates (a start with none to serve is refused: there is no last good one to fall back on), and
 * returns the server factory that serves them, by SNI, reloaded from their files as they change.
 */
export async function createTlsServing(options: TlsServingOptions): Promise<TlsServing> {
  let server: HttpsServer | Http2SecureServer | undefined
  const store = new CertificateStore(options.source, options.logger, (certificate) => server?.setSecureContext(contextOptions(certificate)))
  await store.load()
  const first = store.defaultCertificate
  if (first === undefined) {
    const reasons = [...store.refused().values()]
    throw new ConfigError(reasons.length > 0 ? `no TLS certificate can be served: ${reasons.join('; ')}` : `no TLS certificate found${'dir' in options.source ? ` in ${options.source.dir} (NAME.crt + NAME.key)` : ''}`)
  }
  store.watch()
  const cut = new Map<Http2CutReason, number>()
  let rotation: NodeJS.Timeout | undefined

  return {
    store,
    http2: options.http2,
    cut,
    serverFactory(handle, timeouts) {
      const handler = options.http2 ? withHostFromAuthority(handle) : handle
      let made: HttpsServer | Http2SecureServer
      const tlsOptions = { ...contextOptions(first), SNICallback: (name: string, done: (error: null, context: ReturnType<CertificateStore['contextFor']>) => void) => done(null, store.contextFor(name)) }
      if (options.http2) {
        const h2 = createSecureServer(
          {
            ...tlsOptions,
            allowHTTP1: true,
            settings: { maxConcurrentStreams: HTTP2_LIMITS.maxConcurrentStreams, maxHeaderListSize: HTTP2_LIMITS.maxHeaderListSize },
            maxHeaderListPairs: HTTP2_LIMITS.maxHeaderListPairs,
            maxSessionMemory: HTTP2_LIMITS.maxSessionMemory,
            Http2ServerResponse: StreamAnswer as typeof Http2ServerResponse,
          },
          handler as unknown as Parameters<typeof createSecureServer>[1],
        )
        limitHttp2Sessions(h2, { stallMs: options.http2StallMs, logger: options.logger, onCut: (reason) => cut.set(reason, (cut.get(reason) ?? 0) + 1) })
        closeSessionsWithConnections(h2)
        made = h2
      } else {
        made = createHttpsServer(tlsOptions, handler)
      }
      // What fastify sets on the servers it makes itself.
      Object.assign(made, { keepAliveTimeout: timeouts.keepAliveTimeout, requestTimeout: timeouts.requestTimeout })
      made.setTimeout(timeouts.connectionTimeout ?? 0)
      rotation = setInterval(() => made.setTicketKeys(randomBytes(48)), TICKET_KEYS_EVERY_MS).unref()
      server = made
      return made
    },
    stop() {
      store.stop()
      clearInterval(rotation)
    },
  }
}

/**
 * An answer on an HTTP/2 stream. `Connection: close` (after a refused body, while draining) asks HTTP/1.1 to close the
 * connection after the answer; a stream has no such header (node drops it with a process warning), and what it
 * asks for is done for HTTP/2 by the GOAWAY of a draining session. So it is left out here, quietly.
 */
class StreamAnswer extends Http2ServerResponse {
  override setHeader(name: string, value: number | string | readonly string[]): this {
    if (name.toLowerCase() !== 'connection') super.setHeader(name, value)
    return this
  }

  override writeHead(statusCode: number, ...rest: unknown[]): this {
    const headers = rest.at(-1)
    if (typeof headers === 'object' && headers !== null && !Array.isArray(headers)) for (const name of Object.keys(headers)) if (name.toLowerCase() === 'connection') delete (headers as Record<string, unknown>)[name]
    return (super.writeHead as (status: number, ...args: unknown[]) => this)(statusCode, ...rest)
  }
}

/**
 * An HTTP/2 request names its host in :authority, not Host: it is given as Host too (where the client sent no Host),
 * so matching, forwarding and cache keys read one host whichever protocol the client spoke.
 */
function withHostFromAuthority(handler: (request: IncomingMessage, response: ServerResponse) => void): (request: IncomingMessage, response: ServerResponse) => void {
  return (request, response) => {
    if (request.httpVersionMajor === 2) {
      const authority = request.headers[':authority']
      if (typeof authority === 'string' && request.headers.host === undefined) request.headers.host = authority
    }
    handler(request, response)
  }
}

function contextOptions(certificate: ServedCertificate) {
  return { ...TLS_DEFAULTS, cert: certificate.cert, key: certificate.key }
}

/**
 * The gateway drains by closing idle connections (and, past its drain timeout, all of them). node's HTTP/2 server
 * closes only its HTTP/1.1 ones so: its sessions are closed here too — gracefully (GOAWAY: streams under way finish,
 * the client opens its next one elsewhere), or at once.
 */
function closeSessionsWithConnections(server: Http2SecureServer): void {
  const sessions = new Set<ServerHttp2Session>()
  server.on('session', (session: ServerHttp2Session) => {
    sessions.add(session)
    session.once('close', () => sessions.delete(session))
  })
  // node's HTTP/2 server has it (for the HTTP/1.1 connections ALPN hands to node's HTTP server); its types do not say so.
  const closeIdleHttp1 = (server as unknown as { closeIdleConnections(): void }).closeIdleConnections.bind(server)
  Object.assign(server, {
    closeIdleConnections() {
      closeIdleHttp1()
      for (const session of sessions) if (!session.closed) session.close()
    },
    closeAllConnections() {
      // node's HTTP/1.1 server tracks the connections it took over from ALPN; it only lacks the method here.
      HttpServer.prototype.closeAllConnections.call(server)
      for (const session of sessions) session.destroy()
    },
  })
}
