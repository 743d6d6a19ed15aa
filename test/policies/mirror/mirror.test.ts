import type { IncomingHttpHeaders, ServerResponse } from 'node:http'
import { Pool, request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startGateway, type TestGateway } from '../../support/gateway.js'
import { waitFor } from '../../support/poll.js'
import { freePort } from '../../support/ports.js'
import { routeFile } from '../../support/routes.js'
import { startUpstream, type Upstream } from '../../support/upstream.js'

const median = (values: readonly number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number
const quantile = (values: readonly number[], q: number) => [...values].sort((a, b) => a - b)[Math.floor(values.length * q)] as number

describe('mirror: a copy to a shadow, its answer dropped', () => {
  let users: Upstream
  let shadow: Upstream
  let gateway: TestGateway
  const copies: { url: string; headers: IncomingHttpHeaders; body: string }[] = []
  const sleeping: ServerResponse[] = []
  beforeAll(async () => {
    users = await startUpstream('users')
    // The shadow takes every copy in, body and all, then sleeps 5 s before answering.
    shadow = await startUpstream('shadow', (req, res, body) => {
      copies.push({ url: req.url ?? '', headers: req.headers, body: body.toString() })
      sleeping.push(res)
      setTimeout(() => res.end('late'), 5_000).unref()
    })
    const dead = await freePort()
    gateway = await startGateway({
      'plain.yaml': routeFile('plain', '/plain', users.url, 'requestHeaders: { set: { X-Gateway: portico } }'),
      'mirrored.yaml': routeFile('mirrored', '/mirrored', users.url, `mirror: { upstreams: ["${shadow.url}"], maxInFlight: 50 }`, 'requestHeaders: { set: { X-Gateway: portico } }'),
      'dead-shadow.yaml': routeFile('dead-shadow', '/dead-shadow', users.url, `mirror: { upstreams: ["http://127.0.0.1:${dead}"] }`),
      'sampled.yaml': routeFile('sampled', '/sampled', users.url, `mirror: { upstreams: ["${shadow.url}"], percent: 0 }`, 'rateLimit: { limit: 1000, window: 1m }'),
    })
  })
  afterAll(async () => {
    await gateway?.close()
    for (const res of sleeping) if (!res.writableEnded) res.destroy()
    await Promise.all([users?.close(), shadow?.close()])
  })

  const post = async (pool: Pool, path: string, body: string) => {
    const started = performance.now()
    const r = await pool.request({ path, method: 'POST', headers: { 'content-type': 'text/plain' }, body })
    const answer = (await r.body.json()) as { upstream: string; bytes: number }
    return { ms: performance.now() - started, status: r.statusCode, ...answer }
  }

  it('sends the copy with its body and headers, leaves the client\'s latency as on an unmirrored route, and drops what is over its bound', async () => {
    const pool = new Pool(gateway.url, { connections: 1 })
    const plain: number[] = []
    const mirrored: number[] = []
    try {
      // interleaved, so both routes see the same machine
      for (let i = 0; i < 150; i++) {
        const a = await post(pool, '/plain/orders', `order-${i}`)
        const b = await post(pool, '/mirrored/orders?x=1', `order-${i}`)
        expect([a.status, a.upstream, b.status, b.upstream, b.bytes]).toEqual([200, 'users', 200, 'users', `order-${i}`.length])
        plain.push(a.ms)
        mirrored.push(b.ms)
      }
    } finally {
      await pool.close()
    }
    // A shadow that sleeps 5 s adds nothing the client waits for: the medians stay of one order (a copy costs the
    // gateway a request of its own, ~a millisecond on loopback of a loaded machine), the p99s far from 5 s.
    expect(median(mirrored) / median(plain)).toBeLessThan(2)
    expect(quantile(mirrored, 0.99)).toBeLessThan(Math.max(100, quantile(plain, 0.99) * 3))

    await waitFor(() => copies.length >= 50 || undefined, { what: 'the copies to reach the shadow' })
    expect(copies[0]).toMatchObject({ url: '/mirrored/orders?x=1', body: 'order-0' })
    expect(copies[0]?.headers).toMatchObject({ 'x-portico-mirror': 'mirrored', 'x-gateway': 'portico', 'content-type': 'text/plain' })
    expect(copies.slice(0, 50).map((c) => c.body)).toEqual(Array.from({ length: 50 }, (_, i) => `order-${i}`))
    const text = await request(`${gateway.adminUrl}/metrics`).then((r) => r.body.text())
    // 50 under way at once at most: the rest of the 150 dropped, not queued
    expect(Number(/^portico_mirror_requests_total\{route="mirrored",outcome="dropped"\} (\d+)/m.exec(text)?.[1])).toBeGreaterThanOrEqual(100)
    expect(Number(/^portico_mirror_in_flight\{route="mirrored"\} (\d+)/m.exec(text)?.[1])).toBeLessThanOrEqual(50)
    expect(copies.length).toBeLessThanOrEqual(50)
  })

  it('serves on when the shadow is down, counting the failed copies; a percent of 0 copies nothing', async () => {
    for (let i = 0; i < 5; i++) expect((await request(`${gateway.url}/dead-shadow/x`, { method: 'PUT', body: 'x' })).statusCode).toBe(200)
    const copiesBefore = copies.length
    for (let i = 0; i < 20; i++) expect((await request(`${gateway.url}/sampled/x`)).statusCode).toBe(200)
    await waitFor(async () => {
      const text = await request(`${gateway.adminUrl}/metrics`).then((r) => r.body.text())
      return /^portico_mirror_requests_total\{route="dead-shadow",outcome="failed"\} 5$/m.test(text) || undefined
    }, { what: 'the failed copies to be counted' })
    expect(copies.length).toBe(copiesBefore)
  })
})
