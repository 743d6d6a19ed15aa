import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { connect } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket, { WebSocketServer } from 'ws'
import { startGateway, type TestGateway } from '../support/gateway.js'
import { waitFor } from '../support/poll.js'
import { routeFile } from '../support/routes.js'

describe('WebSocket hostile clients', () => {
  let server: Server
  let wss: WebSocketServer
  let gateway: TestGateway
  let accepted = 0
  beforeAll(async () => {
    // An upstream that takes 300 ms to accept a handshake.
    server = createServer()
    wss = new WebSocketServer({ noServer: true })
    server.on('upgrade', (request, socket, head) => {
      setTimeout(() => wss.handleUpgrade(request, socket, head, (ws) => wss.emit('connection', ws, request)), 300)
    })
    wss.on('connection', (ws) => {
      accepted++
      ws.on('message', (data) => ws.send(data))
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const upstream = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    gateway = await startGateway({ 'r.yaml': routeFile('ws', '/ws', upstream, 'websocket: true') }, { 'max-ws-message': '64kb' })
  })
  afterAll(async () => {
    await gateway?.close()
    for (const client of wss?.clients ?? []) client.terminate()
    server?.closeAllConnections()
    server?.close()
  })

  it('leaves no upstream connection open when the client resets during the handshake', async () => {
    const { port } = new URL(gateway.url)
    for (let i = 0; i < 5; i++) {
      const socket = connect(Number(port), '127.0.0.1', () =>
        socket.write('GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'),
      )
      socket.on('error', () => undefined)
      // the gateway has answered 101 and is still waiting for the upstream: the client is gone
      await new Promise<void>((resolve) => socket.once('data', () => resolve()))
      socket.resetAndDestroy()
    }
    await waitFor(() => accepted === 5, { timeoutMs: 3_000, what: 'the upstream to accept the five handshakes' })
    await waitFor(() => wss.clients.size === 0, { timeoutMs: 3_000, what: 'every upstream connection to be closed' })
  })

  it('closes a connection whose message is over the limit (1009), and keeps smaller ones flowing', async () => {
    const socket = new WebSocket(`${gateway.url.replace('http', 'ws')}/ws`)
    await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject))
    const echoed = new Promise<string>((resolve) => socket.once('message', (data) => resolve(data.toString())))
    socket.send('small')
    expect(await echoed).toBe('small')
    const closed = new Promise<number>((resolve) => socket.once('close', (code) => resolve(code)))
    socket.send(Buffer.alloc(100 * 1024))
    expect(await closed).toBe(1009)
  })
})
