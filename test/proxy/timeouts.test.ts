import { connect, type Socket } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { makeRoutesDir, spawnGateway, startGateway, type GatewayProcess, type TestGateway } from '../support/gateway.js'
import { answer } from '../support/http.js'
import { waitFor } from '../support/poll.js'
import { routeFile } from '../support/routes.js'
import { startUpstream, type Upstream } from '../support/upstream.js'

describe('response timeouts', () => {
  let silent: Upstream
  let gateway: GatewayProcess
  beforeAll(async () => {
    // Holds every request until the gateway gives up on it.
    silent = await startUpstream('silent', () => undefined)
    // Its own process: the clients' event loop must not be the gateway's.
    gateway = await spawnGateway(await makeRoutesDir({ 'r.yaml': routeFile('silent', '/silent', silent.url, 'timeout: { response: 300ms }') }))
  })
  afterAll(async () => {
    await gateway?.stop('SIGKILL')
    await silent?.close()
  })

  it('answers 504 about 300 ms after a 300 ms response timeout, with 50 clients at once', async () => {
    // 50 clients with their connections open and the gateway warm, then the measured round.
    await Promise.all(Array.from({ length: 50 }, () => answer(`${gateway.url}/silent`)))
    const answers = await Promise.all(
      Array.from({ length: 50 }, async () => {
        const started = performance.now()
        const result = await answer(`${gateway.url}/silent`)
        return { ...result, took: performance.now() - started }
      }),
    )
    expect(answers.map((a) => a.code)).toEqual(Array(50).fill('upstream_timeout'))
    // The gateway's clock fires on time: run alone, every answer comes within 400 ms. What a client sees on top is
    // this two-core machine, busy with the rest of the suite beside this test, so the bound here is looser. Before the
    // attempt clock, every answer came after 0.9-1.1 s (undici's coarse timers).
    const took = answers.map((a) => a.took).sort((a, b) => a - b)
    expect(took[25]).toBeLessThan(600)
    expect(took[49]).toBeLessThan(850)
  })
})

describe('slow clients', () => {
  let upstream: Upstream
  let gateway: TestGateway
  const sockets: Socket[] = []
  beforeAll(async () => {
    upstream = await startUpstream('patient')
    gateway = await startGateway({ 'r.yaml': routeFile('upload', '/upload', upstream.url, 'timeout: { response: 1s }') })
  })
  afterAll(async () => {
    for (const socket of sockets) socket.destroy()
    await gateway?.close()
    await upstream?.close()
  })

  it('cannot hold the upstream past the route\'s timeout: other requests still get an answer', async () => {
    const { port } = new URL(gateway.url)
    // 130 uploads that send one byte of their 1000 every 500 ms: more than the pool's 128 connections to the instance.
    for (let i = 0; i < 130; i++) {
      const socket = connect(Number(port), '127.0.0.1', () => socket.write('POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\na'))
      socket.on('error', () => undefined)
      const drip = setInterval(() => (socket.writable ? socket.write('a') : clearInterval(drip)), 500)
      socket.on('close', () => clearInterval(drip))
      sockets.push(socket)
    }
    // the uploads hold the whole pool: 128 connections to the instance
    await waitFor(async () => (await upstream.connections()) >= 128, { timeoutMs: 10_000, what: 'the slow uploads to fill the pool' })
    const started = performance.now()
    const next = await answer(`${gateway.url}/upload/other`)
    expect(next.status === 200 || next.code === 'upstream_timeout').toBe(true)
    // never more than the timeout plus the time the slow uploads keep their connections (also the timeout)
    expect(performance.now() - started).toBeLessThan(2_500)
  })
})

describe('clients that never read', () => {
  let upstream: Upstream
  let gateway: TestGateway
  const sockets: Socket[] = []
  let streaming = 0
  let started = 0
  beforeAll(async () => {
    // An endless stream that writes only as fast as the gateway takes it (the instance itself buffers nothing).
    upstream = await startUpstream('stream', (req, res) => {
      if (req.url !== '/feed/endless') return void res.end('ok')
      streaming++
      started++
      res.on('close', () => streaming--)
      const chunk = Buffer.alloc(64 * 1024, 120)
      const pump = (): void => {
        while (res.write(chunk));
      }
      res.on('drain', pump)
      pump()
    })
    gateway = await startGateway({ 'r.yaml': routeFile('feed', '/feed', upstream.url, 'timeout: { response: 1s }') })
  })
  afterAll(async () => {
    for (const socket of sockets) socket.destroy()
    await gateway?.close()
    await upstream?.close()
  })

  it('cannot hold the upstream: a client that takes nothing in for the response timeout is cut, and its upstream request with it', async () => {
    const { port } = new URL(gateway.url)
    // 130 clients that ask for the stream and never read it: more than the pool's 128 connections to the instance.
    for (let i = 0; i < 130; i++) {
      const socket = connect(Number(port), '127.0.0.1', () => socket.write('GET /feed/endless HTTP/1.1\r\nHost: x\r\n\r\n'))
      socket.pause()
      socket.on('error', () => undefined)
      sockets.push(socket)
    }
    await waitFor(() => started >= 128, { timeoutMs: 20_000, what: 'the stuck readers to fill the pool' })
    // a second without progress cuts each one, and its upstream response ends with it
    await waitFor(() => streaming === 0, { timeoutMs: 8_000, what: 'every stuck stream to be ended upstream' })
    const next = await answer(`${gateway.url}/feed/other`)
    expect(next.status).toBe(200)
  })
})
