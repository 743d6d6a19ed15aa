import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { connect } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket, { WebSocketServer } from 'ws'
import { startGateway, type TestGateway } from '../support/gateway.js'
import { waitFor } from '../support/poll.js'
import { rawExchange } from '../support/raw-http.js'
import { routeFile } from '../support/routes.js'

const HANDSHAKE = 'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n'

describe('WebSocket tunnel', () => {
  let server: Server
  let wss: WebSocketServer
  let gateway: TestGateway
  let accepted = 0
  beforeAll(async () => {
    // An upstream that takes 300 ms to accept a handshake, refuses /ws/private with its own 403, limits messages to
    // 2 MiB, and echoes.
    server = createServer()
    wss = new WebSocketServer({ noServer: true, maxPayload: 2 * 1024 * 1024 })
    server.on('upgrade', (request, socket, head) => {
      if (request.url === '/ws/private') return void socket.end('HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 9\r\nX-Why: token\r\n\r\nno token\n')
      setTimeout(() => wss.handleUpgrade(request, socket, head, (ws) => wss.emit('connection', ws, request)), 300)
    })
    wss.on('connection', (ws) => {
      accepted++
      ws.on('error', () => undefined) // a message over its limit
      ws.on('message', (data, binary) => ws.send(data, { binary }))
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const upstream = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    gateway = await startGateway({
      'r.yaml': routeFile('ws', '/ws', upstream, 'websocket: true') + routeFile('gone', '/gone', 'http://127.0.0.1:1', 'websocket: true').replace(/^routes:\n/, ''),
    })
  })
  afterAll(async () => {
    await gateway?.close()
    for (const client of wss?.clients ?? []) client.terminate()
    server?.closeAllConnections()
    server?.close()
  })

  it('passes messages both ways, a 1 MiB one whole (frames are not held: the instance\'s own limit applies)', async () => {
    const socket = new WebSocket(`${gateway.url.replace('http', 'ws')}/ws`, { maxPayload: 4 * 1024 * 1024 })
    await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject))
    const echoed = new Promise<string>((resolve) => socket.once('message', (data) => resolve(data.toString())))
    socket.send('small')
    expect(await echoed).toBe('small')
    const big = Buffer.alloc(1024 * 1024, 7)
    const bigEcho = new Promise<Buffer>((resolve) => socket.once('message', (data) => resolve(data as Buffer)))
    socket.send(big)
    expect((await bigEcho).equals(big)).toBe(true)
    const closed = new Promise<number>((resolve) => socket.once('close', (code) => resolve(code)))
    // over the instance's 2 MiB: the instance closes with 1009, and the client sees that code through the tunnel
    socket.send(Buffer.alloc(3 * 1024 * 1024))
    expect(await closed).toBe(1009)
  })

  it('answers with the instance\'s own refusal (status, headers, body) instead of a 101 then a close', async () => {
    const { port } = new URL(gateway.url)
    const { text } = await rawExchange(Number(port), `GET /ws/private HTTP/1.1\r\nHost: x\r\n${HANDSHAKE}\r\n`)
    expect(text).toMatch(/^HTTP\/1\.1 403 /)
    expect(text).toMatch(/x-why: token/i)
    expect(text).toMatch(/no token\n$/)
    expect(text).not.toMatch(/ 101 /)
  })

  it('answers an unreachable instance with a 502 problem, and a non-WebSocket upgrade with 501', async () => {
    const { port } = new URL(gateway.url)
    const unreachable = await rawExchange(Number(port), `GET /gone HTTP/1.1\r\nHost: x\r\n${HANDSHAKE}\r\n`)
    expect(unreachable.text).toMatch(/^HTTP\/1\.1 502 /)
    expect(unreachable.text).toMatch(/application\/problem\+json/)
    expect(unreachable.text).toMatch(/"code":"upstream_unreachable"/)
    const h2c = await rawExchange(Number(port), 'GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n')
    expect(h2c.text).toMatch(/^HTTP\/1\.1 501 /)
    expect(h2c.text).toMatch(/"code":"not_implemented"/)
  })

  it('leaves no upstream connection open when the client resets during the handshake or right after it', async () => {
    const { port } = new URL(gateway.url)
    const before = accepted
    for (let i = 0; i < 10; i++) {
      const socket = connect(Number(port), '127.0.0.1', () => socket.write(`GET /ws HTTP/1.1\r\nHost: x\r\n${HANDSHAKE}\r\n`))
      socket.on('error', () => undefined)
      // even: reset while the instance is still deciding; odd: once the 101 has come through
      if (i % 2 === 0) await new Promise((resolve) => setTimeout(resolve, 50))
      else await new Promise<void>((resolve) => socket.once('data', () => resolve()))
      socket.resetAndDestroy()
    }
    await waitFor(() => accepted - before >= 5, { timeoutMs: 3_000, what: 'the upstream to accept the handshakes that got through' })
    await waitFor(() => wss.clients.size === 0, { timeoutMs: 3_000, what: 'every upstream connection to be closed' })
    const open = await new Promise<number>((resolve, reject) => server.getConnections((error, count) => (error ? reject(error) : resolve(count))))
    expect(open).toBe(0)
  })
})

describe('WebSocket tunnels, bounded per route and per client', () => {
  let server: Server
  let wss: WebSocketServer
  let gateway: TestGateway
  beforeAll(async () => {
    server = createServer()
    wss = new WebSocketServer({ server })
    wss.on('connection', (ws) => ws.on('message', (data) => ws.send(data)))
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    gateway = await startGateway({ 'r.yaml': routeFile('bounded', '/bounded', `http://127.0.0.1:${(server.address() as AddressInfo).port}`, 'websocket: { maxTunnels: 5, maxTunnelsPerClient: 3 }') })
  })
  afterAll(async () => {
    await gateway?.close()
    for (const client of wss?.clients ?? []) client.terminate()
    server?.closeAllConnections()
    server?.close()
  })

  /** A tunnel from a client address: open, or refused with the gateway's status and problem code. */
  const open = (localAddress: string) =>
    new Promise<{ socket?: WebSocket; status?: number; code?: string }>((resolve) => {
      const socket = new WebSocket(`${gateway.url.replace('http', 'ws')}/bounded`, { localAddress })
      socket.once('open', () => resolve({ socket }))
      socket.once('unexpected-response', (_request, response) => {
        let text = ''
        response.on('data', (chunk: Buffer) => (text += chunk.toString()))
        response.on('end', () => resolve({ status: response.statusCode, code: (JSON.parse(text) as { code: string }).code }))
      })
      socket.once('error', () => undefined)
    })

  it('refuses a client past its share (429) and everyone past the route\'s (503), and gives the places back as tunnels close', async () => {
    const first = await Promise.all([open('127.0.0.1'), open('127.0.0.1'), open('127.0.0.1')])
    expect(first.every((t) => t.socket)).toBe(true)
    expect(await open('127.0.0.1')).toMatchObject({ status: 429, code: 'too_many_tunnels' })
    const others = await Promise.all([open('127.0.0.2'), open('127.0.0.3')])
    expect(others.every((t) => t.socket)).toBe(true)
    expect(await open('127.0.0.4')).toMatchObject({ status: 503, code: 'concurrency_limited' })
    // a tunnel that works still echoes
    const echoed = new Promise<string>((resolve) => first[0]?.socket?.once('message', (data) => resolve(data.toString())))
    first[0]?.socket?.send('still here')
    expect(await echoed).toBe('still here')

    first[1]?.socket?.close()
    const again = await waitFor(async () => {
      const tunnel = await open('127.0.0.1')
      return tunnel.socket ?? false
    }, { timeoutMs: 5_000, what: 'the closed tunnel\'s place to come back' })
    // the refusals are counted with the gateway's own answers
    const metrics = await (await fetch(`${gateway.adminUrl}/metrics`)).text()
    expect(metrics).toMatch(/portico_gateway_errors_total\{route="bounded",code="too_many_tunnels"\} [1-9]/)
    expect(metrics).toMatch(/portico_gateway_errors_total\{route="bounded",code="concurrency_limited"\} [1-9]/)
    for (const tunnel of [...first, ...others]) tunnel.socket?.terminate()
    again.terminate()
  })
})
