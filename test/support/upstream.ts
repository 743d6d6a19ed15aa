import { createServer, type IncomingMessage, type ServerResponse, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { WebSocketServer } from 'ws'

export interface Upstream {
  readonly url: string
  readonly port: number
  readonly name: string
  /** Requests received, in order. */
  readonly requests: { method: string; url: string; headers: IncomingMessage['headers']; bytes: number }[]
  /** Connections open to it now. */
  connections(): Promise<number>
  close(): Promise<void>
}

export type UpstreamHandler = (req: IncomingMessage, res: ServerResponse, body: Buffer) => void

/** Answers with JSON describing what it received: its name, the method, path, headers and body size. */
export const echo: (name: string) => UpstreamHandler = (name) => (req, res, body) => {
  res.setHeader('content-type', 'application/json')
  res.end(JSON.stringify({ upstream: name, method: req.method, url: req.url, headers: req.headers, bytes: body.length }))
}

/** A real HTTP server on 127.0.0.1, port 0, that records requests; optionally echoes WebSocket messages. */
export async function startUpstream(name: string, handler: UpstreamHandler = echo(name), options: { websocket?: boolean; port?: number } = {}): Promise<Upstream> {
  const requests: Upstream['requests'] = []
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, bytes: body.length })
      handler(req, res, body)
    })
  })
  server.keepAliveTimeout = 30_000
  if (options.websocket) {
    const wss = new WebSocketServer({ server })
    wss.on('connection', (socket, req) => {
      socket.send(JSON.stringify({ upstream: name, url: req.url, headers: req.headers }))
      socket.on('message', (data, binary) => socket.send(binary ? data : `${name}:${data.toString()}`))
    })
  }
  await new Promise<void>((resolve) => server.listen(options.port ?? 0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    name,
    requests,
    connections: () => new Promise<number>((resolve, reject) => server.getConnections((error, count) => (error ? reject(error) : resolve(count)))),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}
