import { Redis } from 'ioredis'
import { connect } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { startGateway, type TestGateway } from '../support/gateway.js'
import { answer } from '../support/http.js'
import { waitFor } from '../support/poll.js'
import { startUpstream, type Upstream } from '../support/upstream.js'

/** Defects found in the seams of the old request path; each test failed before the pipeline redesign. */


describe('a client that goes away during a retry backoff', () => {
  let failing: Upstream, healthy: Upstream
  let gateway: TestGateway
  let aFails = true
  beforeAll(async () => {
    // A answers 503 while `aFails`; B answers 200. The retry waits up to 1 s before trying B.
    failing = await startUpstream('a', (_req, res) => {
      if (aFails) return void res.writeHead(503).end('busy')
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"upstream":"a"}')
    })
    healthy = await startUpstream('b')
    gateway = await startGateway({
      'r.yaml': `routes:
  - name: retried
    prefix: /retried
    upstreams: [${failing.url}, ${healthy.url}]
    loadBalancer: least-request
    retry: { attempts: 2, on: [503], backoff: 1s, budgetPercent: 100 }
`,
    })
  })
  afterAll(async () => {
    await gateway?.close()
    await Promise.all([failing?.close(), healthy?.close()])
  })

  it('sends no retry once the client is gone, and leaks no in-flight count', async () => {
    // least-request picks at random between two idle instances: ask until A (503) takes the first attempt, then
    // leave 15 ms into the backoff.
    let abandoned = false
    for (let i = 0; i < 12 && !abandoned; i++) {
      const [a, b] = [failing.requests.length, healthy.requests.length]
      const controller = new AbortController()
      const pending = request(`${gateway.url}/retried`, { signal: controller.signal }).then((r) => r.body.dump(), () => undefined)
      await waitFor(() => failing.requests.length > a || healthy.requests.length > b, { what: 'the first attempt' })
      if (failing.requests.length > a) {
        await sleep(15)
        controller.abort()
        abandoned = true
      }
      await pending
    }
    expect(abandoned).toBe(true)
    const toB = healthy.requests.length
    // The longest backoff is 1 s (full jitter under the cap): absence can only be shown by waiting it out.
    await sleep(1_200)
    expect(healthy.requests.length).toBe(toB)

    // Defect 2: the abandoned request's in-flight count on A came back, so least-request still spreads. With the
    // count leaked, A would look busy for ever and every request would go to B.
    aFails = false
    const seen = new Set<string>()
    for (let i = 0; i < 40 && seen.size < 2; i++) {
      const response = await request(`${gateway.url}/retried`)
      seen.add(((await response.body.json()) as { upstream: string }).upstream)
    }
    expect([...seen].sort()).toEqual(['a', 'b'])
  })
})

describe('the breaker pub/sub channel carries junk', () => {
  const redisUrl = inject('redisUrl')
  const route = `junk-${process.pid}`
  let upstream: Upstream
  let gateway: TestGateway
  let publisher: Redis
  beforeAll(async () => {
    upstream = await startUpstream('fine')
    gateway = await startGateway(
      { 'r.yaml': `routes:\n  - name: ${route}\n    prefix: /junk\n    upstreams: [${upstream.url}]\n    circuitBreaker: { resetTimeout: 30s }\n` },
      {},
      { REDIS_URL: redisUrl },
    )
    publisher = new Redis(redisUrl)
    await waitFor(async () => Number((await publisher.pubsub('NUMSUB', 'portico:breakers'))[1]) > 0, { what: 'the gateway to subscribe' })
  })
  afterAll(async () => {
    publisher?.disconnect()
    await gateway?.close()
    await upstream?.close()
  })

  it('drops what it cannot read and still acts on the messages it can (old and new format)', async () => {
    for (const junk of ['not json', 'null', '42', '[]', '{"route":5}', `{"route":"${route}","event":"explode","from":"x"}`, `{"v":2,"route":"${route}","event":"open","from":"x"}`, `{"route":"${route}","event":"open","from":"x","until":"soon"}`]) {
      await publisher.publish('portico:breakers', junk)
    }
    expect((await answer(`${gateway.url}/junk`)).status).toBe(200)
    // A replica from before the format had a version: no `v`.
    await publisher.publish('portico:breakers', JSON.stringify({ route, event: 'open', until: Date.now() + 30_000, from: 'older-replica' }))
    const refused = await waitFor(async () => {
      const refusal = await answer(`${gateway.url}/junk`)
      return refusal.code === 'circuit_open' ? refusal : undefined
    }, { what: 'the breaker to open' })
    expect(refused.headers['retry-after']).toBeDefined()
    await publisher.publish('portico:breakers', JSON.stringify({ v: 1, route, event: 'close', from: 'newer-replica' }))
    await waitFor(async () => (await answer(`${gateway.url}/junk`)).status === 200, { what: 'the breaker to close' })
  })
})

describe('answers of the gateway itself', () => {
  let gateway: TestGateway
  beforeAll(async () => {
    gateway = await startGateway(
      { 'r.yaml': 'routes:\n  - name: nobody\n    prefix: /nobody\n    service: nobody-registers-this\n  - name: dead\n    prefix: /api/dead\n    rewritePrefix: /\n    upstreams: [http://127.0.0.1:9]\n' },
      {},
      { CONSUL_HTTP_ADDR: inject('consulAddress') },
    )
  })
  afterAll(async () => {
    await gateway?.close()
  })

  it('every 503 carries Retry-After (no_instance)', async () => {
    const refusal = await answer(`${gateway.url}/nobody`)
    expect(refusal).toMatchObject({ status: 503, code: 'no_instance' })
    expect(refusal.headers['retry-after']).toBe('1')
  })

  it('names the client\'s own path and query as the problem\'s instance, not the rewritten one', async () => {
    const refusal = await answer(`${gateway.url}/api/dead/7?x=1`)
    expect(refusal.code).toBe('upstream_unreachable')
    expect(JSON.parse(refusal.text).instance).toBe('/api/dead/7?x=1')
  })

  it('answers oversized headers 431 header_too_large from the one error table', async () => {
    const { port } = new URL(gateway.url)
    const raw = await new Promise<string>((resolve, reject) => {
      const socket = connect(Number(port), '127.0.0.1', () => socket.write(`GET /nobody HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`))
      let text = ''
      socket.on('data', (chunk) => (text += chunk.toString()))
      socket.on('end', () => resolve(text))
      socket.on('error', reject)
    })
    expect(raw).toMatch(/^HTTP\/1\.1 431 /)
    expect(raw).toContain('application/problem+json')
    expect(raw).toContain('"code":"header_too_large"')
  })
})

describe('a retry to an instance whose address reply-from cannot use', () => {
  it('fails that attempt like any other instead of throwing from the backoff timer', async () => {
    const busy = await startUpstream('busy', (_req, res) => res.writeHead(503).end('busy'))
    // `[zz]` passes the route schema's origin pattern, but no URL can be built from it.
    const gateway = await startGateway({ 'r.yaml': `routes:\n  - name: odd\n    prefix: /odd\n    upstreams: [${busy.url}, "http://[zz]:80"]\n    retry: { attempts: 2, on: [503], backoff: 1ms, budgetPercent: 100 }\n` })
    try {
      const refusal = await answer(`${gateway.url}/odd`)
      expect(refusal.status).toBe(502)
      expect(refusal.code).toBe('upstream_unreachable')
    } finally {
      await gateway.close()
      await busy.close()
    }
  })
})
