import type { FastifyInstance } from 'fastify'
import { request as httpRequest, ServerResponse, type IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import { deliver } from './send.js'
import type { Exchange } from './exchange.js'
import { clientResponseHeaders } from './forwarding-headers.js'
import type { WebSocketLimits } from '../config/parse-route-file.js'
import { GatewayError } from '../kernel/errors.js'
import { RESPONSE_TIMEOUT } from '../kernel/upstream-errors.js'

const kUpgradeHead = Symbol('portico.upgradeHead')
type UpgradeRequest = IncomingMessage & { [kUpgradeHead]?: Buffer }

/** A route's tunnels open (handshakes under way included) in this process, in all and by client address. */
interface OpenTunnels {
  count: number
  readonly byClient: Map<string, number>
}

/**
 * The open tunnels of a gateway: they are no HTTP connections of the server, so closing must end them itself. Each
 * holds an upstream connection for as long as the client likes, so a route's tunnels, and one client's, are bounded.
 */
export class Tunnels {
  readonly #sockets = new Set<Socket>()
  readonly #open = new Map<string, OpenTunnels>()

  /**
   * Upgrade requests go through the app's routing like any other request (route match, guards, problem+json
   * answers) on a response bound to their socket; the route's handler then tunnels them (or answers and closes).
   */
  routeUpgrades(app: FastifyInstance): void {
    app.server.on('upgrade', (request: UpgradeRequest, socket: Socket, head: Buffer) => {
      request[kUpgradeHead] = head
      this.#track(socket)
      const response = new ServerResponse(request)
      response.assignSocket(socket)
      response.shouldKeepAlive = false
      // An answer other than a tunnel ends the connection: the client's parser is no longer in HTTP/1.1 request mode.
      response.on('finish', () => socket.destroy())
      app.routing(request, response)
    })
  }

  closeAll(): void {
    for (const socket of this.#sockets) socket.destroy()
  }

  /** A place for the exchange's tunnel, given back when its client's connection closes; or why there is none. */
  #takePlace(ex: Exchange, client: Socket): GatewayError | undefined {
    const { route } = ex
    const limits = route.websocket as WebSocketLimits
    let open = this.#open.get(route.name)
    if (!open) this.#open.set(route.name, (open = { count: 0, byClient: new Map() }))
    const address = ex.request.ip
    const held = open.byClient.get(address) ?? 0
    if (held >= limits.maxTunnelsPerClient) return new GatewayError('too_many_tunnels', `This client holds ${held} WebSocket tunnels on route "${route.name}", as many as it allows`)
    if (open.count >= limits.maxTunnels) return new GatewayError('concurrency_limited', `Route "${route.name}" has ${open.count} WebSocket tunnels open, as many as it allows`)
    open.count++
    open.byClient.set(address, held + 1)
    const tunnels = open
    client.once('close', () => {
      tunnels.count--
      const left = (tunnels.byClient.get(address) ?? 1) - 1
      if (left === 0) tunnels.byClient.delete(address)
      else tunnels.byClient.set(address, left)
    })
    return undefined
  }

  #track(socket: Socket): void {
    this.#sockets.add(socket)
    socket.on('error', destroyQuietly).once('close', () => this.#sockets.delete(socket))
  }

  /**
   * Sends the handshake to the exchange's instance. Its 101 joins the two sockets byte for byte (nginx's and
   * Envoy's way: frames are never parsed or held, so a message of any size streams through with backpressure);
   * any other answer (a refusal, a handshake error) goes to the client as the upstream gave it.
   */
  tunnel(ex: Exchange): void {
    const { request, reply } = ex
    const client = reply.raw.socket as Socket
    const refusal = this.#takePlace(ex, client)
    if (refusal) return deliver.onError(ex, refusal)
    const upstream = httpRequest(new URL(ex.upstreamUrl, ex.instance.origin), { method: request.method, headers: tunnelHeaders(ex), agent: false })
    const timer = setTimeout(() => upstream.destroy(Object.assign(new Error('no handshake answer within the timeout'), { code: RESPONSE_TIMEOUT })), ex.timeoutMs)
    const abandon = (): void => void upstream.destroy()
    client.once('close', abandon)

    upstream.on('upgrade', (res: IncomingMessage, upstreamSocket: Socket, upstreamHead: Buffer) => {
      clearTimeout(timer)
      reply.hijack()
      client.off('close', abandon)
      this.#track(upstreamSocket)
      if (client.destroyed) return void upstreamSocket.destroy()
      client.once('close', () => upstreamSocket.destroy())
      upstreamSocket.once('close', () => client.destroy())
      let head = `HTTP/1.1 101 ${res.statusMessage ?? 'Switching Protocols'}\r\n`
      for (let i = 0; i < res.rawHeaders.length; i += 2) head += `${res.rawHeaders[i]}: ${res.rawHeaders[i + 1]}\r\n`
      client.write(`${head}\r\n`)
      if (upstreamHead.length > 0) client.write(upstreamHead)
      const clientHead = (request.raw as UpgradeRequest)[kUpgradeHead]
      if (clientHead && clientHead.length > 0) upstreamSocket.write(clientHead)
      upstreamSocket.pipe(client)
      client.pipe(upstreamSocket)
    })
    upstream.on('response', (res: IncomingMessage) => {
      clearTimeout(timer)
      client.off('close', abandon)
      try {
        reply.code(res.statusCode ?? 502).headers(clientResponseHeaders(res.headers, request)).send(res)
      } catch (error) {
        // A status or header node will not send (this runs from an event, where a throw would end the process).
        res.resume()
        deliver.onError(ex, Object.assign(error as Error, { code: 'UND_ERR_INFO' }))
      }
    })
    upstream.on('error', (error: Error) => {
      clearTimeout(timer)
      client.off('close', abandon)
      if (!client.destroyed) deliver.onError(ex, error)
    })
    upstream.end()
  }
}

/** Is this request one that came through the upgrade event (its socket is the tunnel's, not an HTTP connection's)? */
export function isUpgradeRequest(raw: IncomingMessage): boolean {
  return (raw as UpgradeRequest)[kUpgradeHead] !== undefined
}

/** The forwarding headers of any request, with the handshake's own (Upgrade, Connection, Sec-WebSocket-*) kept. */
function tunnelHeaders(ex: Exchange): Record<string, string | string[]> {
  const { request, route } = ex
  const headers = ex.withForwarding({ ...request.headers })
  if (!route.preserveHost) delete headers.host
  headers.connection = 'Upgrade'
  headers.upgrade = request.headers.upgrade
  return headers as Record<string, string | string[]>
}

function destroyQuietly(this: Socket): void {
  this.destroy()
}
