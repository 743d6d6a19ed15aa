import { Redis } from 'ioredis'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { startGateway, type TestGateway } from '../../support/gateway.js'
import { waitFor } from '../../support/poll.js'
import { startUpstream, type Upstream } from '../../support/upstream.js'
import { freePort } from '../../support/ports.js'

describe('retries and outlier ejection (one replica)', () => {
  let healthy: Upstream, unavailable: Upstream, alsoUnavailable: Upstream, broken: Upstream, fine: Upstream
  let gateway: TestGateway
  let deadPort: number
  beforeAll(async () => {
    deadPort = await freePort()
    healthy = await startUpstream('healthy')
    unavailable = await startUpstream('unavailable', (_req, res) => res.writeHead(503).end('busy'))
    alsoUnavailable = await startUpstream('also-unavailable', (_req, res) => res.writeHead(503).end('busy'))
    broken = await startUpstream('broken', (_req, res) => res.writeHead(500).end('broken'))
    fine = await startUpstream('fine')
    gateway = await startGateway({
      'r.yaml': `
routes:
  - name: get-retry
    prefix: /get
    upstreams: [http://127.0.0.1:${deadPort}, ${healthy.url}]
    retry: { attempts: 2, backoff: 1ms, budgetPercent: 100 }
  - name: post-refused
    prefix: /refused
    upstreams: [http://127.0.0.1:${deadPort}, ${healthy.url}]
    retry: { attempts: 2, backoff: 1ms, budgetPercent: 100 }
  - name: post-no-retry
    prefix: /post
    upstreams: [${unavailable.url}, ${healthy.url}]
    retry: { attempts: 3, on: [503], backoff: 1ms, budgetPercent: 100 }
  - name: outage
    prefix: /outage
    upstreams: [${unavailable.url}, ${alsoUnavailable.url}]
    retry: { attempts: 3, on: [503], backoff: 1ms, budgetPercent: 20 }
  - name: eject
    prefix: /eject
    upstreams: [${broken.url}, ${fine.url}]
    outlierDetection: { consecutiveFailures: 2, baseEjectionTime: 600ms, maxEjectionPercent: 50 }
`,
    })
  })
  afterAll(async () => {
    await gateway?.close()
    await Promise.all([healthy, unavailable, alsoUnavailable, broken, fine].map((u) => u?.close()))
  })

  const call = async (path: string, init: Parameters<typeof request>[1] = {}) => {
    const response = await request(gateway.url + path, init)
    const text = await response.body.text()
    return { status: response.statusCode, text }
  }

  it('retries a GET that hit a dead instance onto a healthy one', async () => {
    const answers = await Promise.all(Array.from({ length: 10 }, () => call('/get/x')))
    expect(answers.map((a) => a.status)).toEqual(Array(10).fill(200))
    // The healthy instance's own body arrives whole.
    for (const { text } of answers) expect(JSON.parse(text)).toMatchObject({ upstream: 'healthy', url: '/get/x' })
    expect(healthy.requests.filter((r) => r.url === '/get/x')).toHaveLength(10)
  })

  it('does not retry a POST with a body, and retries the same request without one', async () => {
    const before = unavailable.requests.length + healthy.requests.length
    // round-robin starts on `unavailable` for the first request of this route
    const post = await call('/post/order', { method: 'POST', body: '{"a":1}', headers: { 'content-type': 'application/json' } })
    expect(post.status).toBe(503)
    expect(post.text).toBe('busy') // the upstream's own answer, unchanged
    expect(unavailable.requests.length + healthy.requests.length - before).toBe(1)
    const get = await call('/post/order')
    expect(get.status).toBe(200)
  })

  it('retries a POST whose connection was refused (nothing was sent), its body delivered whole, once', async () => {
    const { Readable } = await import('node:stream')
    const before = healthy.requests.filter((r) => r.url === '/refused/order').length
    const size = 3 * 1024 * 1024
    const answers = await Promise.all(
      Array.from({ length: 6 }, (_, i) => {
        // half with a declared length, half chunked (no length: the body-limit stream sits in between)
        const body = i % 2 === 0 ? Buffer.alloc(size, 1) : Readable.from([Buffer.alloc(size / 2, 1), Buffer.alloc(size / 2, 2)])
        return call('/refused/order', { method: 'POST', body, headers: { 'content-type': 'application/octet-stream' } })
      }),
    )
    expect(answers.map((a) => a.status)).toEqual(Array(6).fill(200))
    for (const { text } of answers) expect(JSON.parse(text)).toMatchObject({ upstream: 'healthy', bytes: size })
    expect(healthy.requests.filter((r) => r.url === '/refused/order').length - before).toBe(6)
  })

  it('caps retries with the budget under a full outage', async () => {
    const before = unavailable.requests.length + alsoUnavailable.requests.length
    for (let i = 0; i < 50; i++) expect((await call('/outage')).status).toBe(503)
    const hits = unavailable.requests.length + alsoUnavailable.requests.length - before
    expect(hits).toBeGreaterThan(50) // some retries happened
    expect(hits).toBeLessThanOrEqual(50 + 3 + 10) // at most 3 + 20 % of 50
  })

  it('ejects an instance after consecutive failures and re-admits it later', async () => {
    await waitFor(async () => {
      await call('/eject')
      return broken.requests.length >= 2
    }, { what: 'two failures on the broken instance' })
    const seenBroken = broken.requests.length
    const statuses = await Promise.all(Array.from({ length: 10 }, () => call('/eject').then((r) => r.status)))
    expect(statuses).toEqual(Array(10).fill(200))
    expect(broken.requests.length).toBe(seenBroken)
    await waitFor(async () => {
      await call('/eject')
      return broken.requests.length > seenBroken
    }, { timeoutMs: 3_000, what: 'the broken instance to be re-admitted' })
  })
})

describe('a retry budget shared by two replicas through Redis', () => {
  const redisUrl = inject('redisUrl')
  const route = `budget-${process.pid}`
  let first: Upstream, second: Upstream
  let replicas: TestGateway[]
  let redis: Redis
  beforeAll(async () => {
    first = await startUpstream('first', (_req, res) => res.writeHead(503).end('busy'))
    second = await startUpstream('second', (_req, res) => res.writeHead(503).end('busy'))
    const files = { 'r.yaml': `routes:\n  - name: ${route}\n    prefix: /budget\n    upstreams: [${first.url}, ${second.url}]\n    retry: { attempts: 2, on: [503], backoff: 1ms, budgetPercent: 20 }\n` }
    replicas = await Promise.all([startGateway(files, {}, { REDIS_URL: redisUrl }), startGateway(files, {}, { REDIS_URL: redisUrl })])
    redis = new Redis(redisUrl)
  })
  afterAll(async () => {
    redis?.disconnect()
    await Promise.all((replicas ?? []).map((r) => r.close()))
    await Promise.all([first?.close(), second?.close()])
  })

  const hits = () => first.requests.length + second.requests.length
  const fleetRetries = async () => {
    const keys = await redis.keys(`portico:rb:{${route}}:counts:*`)
    const values = await Promise.all(keys.map((k) => redis.hget(k, 'retries')))
    return values.reduce((sum, v) => sum + Number(v ?? 0), 0)
  }

  it('lets the replicas together retry no more than the budget, not each its own', async () => {
    for (let i = 0; i < 50; i++) await (await request(`${replicas[0]!.url}/budget`)).body.dump()
    const retriesOfA = hits() - 50
    expect(retriesOfA).toBe(3 + 10) // the minimum, plus 20 % of 50
    await waitFor(async () => (await fleetRetries()) === retriesOfA, { what: 'replica A\'s retries to reach the fleet counters' })
    const before = hits()
    for (let i = 0; i < 10; i++) await (await request(`${replicas[1]!.url}/budget`)).body.dump()
    // The fleet has 60 requests and 13 retries: 2 more fit (3 + 20 % of 60 = 15). On its own, B would allow 5.
    expect(hits() - before - 10).toBeLessThanOrEqual(2)
  })
})
