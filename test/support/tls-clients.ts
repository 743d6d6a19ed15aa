import { connect as http2Connect, type ClientHttp2Session, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2'
import { request as httpsRequest, type RequestOptions } from 'node:https'
import { connect as tlsConnect, type PeerCertificate } from 'node:tls'

export interface Answer {
  readonly status: number
  readonly headers: IncomingHttpHeaders
  readonly body: string
}

/** An HTTP/2 session to a TLS gateway at 127.0.0.1, for the server name `servername`. */
export function openHttp2(url: string, ca: string, servername = 'gateway.test'): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = http2Connect(url, { ca, servername })
    session.once('error', reject)
    session.once('connect', () => {
      session.off('error', reject)
      session.on('error', () => undefined)
      resolve(session)
    })
  })
}

export function http2Get(session: ClientHttp2Session, path: string, headers: OutgoingHttpHeaders = {}, method = 'GET'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':method': method, ':path': path, ...headers })
    let status = 0
    let responseHeaders: IncomingHttpHeaders = {}
    const chunks: Buffer[] = []
    stream.on('response', (h) => {
      status = Number(h[':status'])
      responseHeaders = h
    })
    stream.on('data', (chunk: Buffer) => chunks.push(chunk))
    stream.on('end', () => resolve({ status, headers: responseHeaders, body: Buffer.concat(chunks).toString() }))
    stream.on('error', reject)
    stream.end()
  })
}

/** One HTTPS request over HTTP/1.1 (ALPN offers only http/1.1), a new connection each time. */
export function httpsGet(url: string, ca: string, servername = 'gateway.test', headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const request = httpsRequest(url, { ca, servername, headers, agent: false, ALPNProtocols: ['http/1.1'] } as RequestOptions, (response) => {
      const chunks: Buffer[] = []
      response.on('data', (chunk: Buffer) => chunks.push(chunk))
      response.on('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(chunks).toString() }))
    })
    request.on('error', reject)
    request.end()
  })
}

/** A handshake only: what ALPN chose and which certificate the server sent for `servername` (none: no SNI). */
export function handshake(port: number, ca: string, options: { servername?: string; alpn?: string[] } = {}): Promise<{ alpn: string | false; certificate: PeerCertificate }> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, ca, ...(options.servername === undefined ? {} : { servername: options.servername }), ALPNProtocols: options.alpn ?? ['h2', 'http/1.1'], rejectUnauthorized: false }, () => {
      const result = { alpn: socket.alpnProtocol ?? false, certificate: socket.getPeerCertificate() }
      socket.end()
      resolve(result)
    })
    socket.on('error', reject)
  })
}
