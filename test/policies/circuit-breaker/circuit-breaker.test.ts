import type { IncomingMessage } from 'node:http'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { makeRoutesDir, spawnGateway, startGateway, type GatewayProcess } from '../../support/gateway.js'
import { freePort } from '../../support/ports.js'
import { timeUntil, waitFor } from '../../support/poll.js'
import { startRedis, type TestRedis } from '../../support/redis.js'
import { startUpstream } from '../../support/upstream.js'

/** An upstream whose health the test switches; it counts every request it gets. */
async function switchable(name: string) {
  let failing = false
  const upstream = await startUpstream(name, (_req, res) => {
    res.writeHead(failing ? 500 : 200, { 'content-type': 'application/json' }).end(JSON.stringify({ upstream: name }))
  })
  return { upstream, fail: (value: boolean) => (failing = value) }
}

const breakerRoute = (name: string, upstream: string, options: string) =>
  `routes:\n  - name: ${name}\n    prefix: /${name}\n    upstreams: [${upstream}]\n    circuitBreaker: ${options}\n`

const get = async (url: string) => {
  const response = await request(url)
  const text = await response.body.text()
  return { status: response.statusCode, headers: response.headers, text, code: response.statusCode >= 400 && text.startsWith('{"type"') ? (JSON.parse(text) as { code: string }).code : undefined }
}

describe('a circuit breaker shared by two replicas', () => {
  const redisUrl = inject('redisUrl')
  const route = `cb-${process.pid}`
  let service: Awaited<ReturnType<typeof switchable>>
  let a: GatewayProcess, b: GatewayProcess
  beforeAll(async () => {
    service = await switchable('flaky')
    const dir = await makeRoutesDir({ 'cb.yaml': breakerRoute(route, service.upstream.url, '{ errorThresholdPercentage: 50, volumeThreshold: 4, window: 10s, resetTimeout: 1500ms }') })
    ;[a, b] = await Promise.all([spawnGateway(dir, { REDIS_URL: redisUrl }), spawnGateway(dir, { REDIS_URL: redisUrl })])
  })
  afterAll(async () => {
    await Promise.all([a?.stop('SIGKILL'), b?.stop('SIGKILL')])
    await service?.upstream.close()
  })

  it('opens on B within 1 s of failures driven through A, and B answers 503 without calling the upstream', async () => {
    service.fail(true)
    for (let i = 0; i < 4; i++) {
      const failed = await get(`${a.url}/${route}`)
      expect(failed.status).toBe(500)
      expect(failed.text).toBe('{"upstream":"flaky"}') // a counted failure still reaches the client as the upstream sent it
    }
    const took = await timeUntil(async () => (await get(`${b.url}/${route}`)).code === 'circuit_open', { timeoutMs: 3_000, what: 'B to open' })
    expect(took).toBeLessThan(1_000)
    const hits = service.upstream.requests.length
    const open = await get(`${b.url}/${route}`)
    expect(open.status).toBe(503)
    expect(Number(open.headers['retry-after'])).toBeGreaterThanOrEqual(1)
    expect(Number(open.headers['retry-after'])).toBeLessThanOrEqual(2)
    expect((await get(`${a.url}/${route}`)).code).toBe('circuit_open')
    expect(service.upstream.requests.length).toBe(hits)
  })

  it('after resetTimeout lets exactly one probe through fleet-wide; a failed probe re-opens everywhere', async () => {
    const hits = service.upstream.requests.length
    // Keep both replicas asking until the upstream has been probed, then a little longer.
    await waitFor(async () => {
      await Promise.all([get(`${a.url}/${route}`), get(`${b.url}/${route}`), get(`${a.url}/${route}`), get(`${b.url}/${route}`)])
      return service.upstream.requests.length > hits
    }, { timeoutMs: 5_000, intervalMs: 50, what: 'the probe' })
    await Promise.all(Array.from({ length: 10 }, (_, i) => get(`${(i % 2 ? a : b).url}/${route}`)))
    expect(service.upstream.requests.length - hits).toBe(1)
    expect((await get(`${a.url}/${route}`)).code).toBe('circuit_open')
    expect((await get(`${b.url}/${route}`)).code).toBe('circuit_open')
  })

  it('closes on every replica after a successful probe', async () => {
    service.fail(false)
    await waitFor(async () => (await get(`${a.url}/${route}`)).status === 200 || (await get(`${b.url}/${route}`)).status === 200, { timeoutMs: 5_000, intervalMs: 50, what: 'a successful probe' })
    await waitFor(async () => (await get(`${a.url}/${route}`)).status === 200 && (await get(`${b.url}/${route}`)).status === 200, { timeoutMs: 2_000, what: 'both to close' })
    for (const replica of [a, b]) expect((await get(`${replica.url}/${route}`)).text).toBe('{"upstream":"flaky"}')
  })
})

describe('failures split across replicas', () => {
  const redisUrl = inject('redisUrl')
  const route = `split-${process.pid}`
  let service: Awaited<ReturnType<typeof switchable>>
  let replicas: GatewayProcess[]
  beforeAll(async () => {
    service = await switchable('split')
    const dir = await makeRoutesDir({ 'cb.yaml': breakerRoute(route, service.upstream.url, '{ errorThresholdPercentage: 50, volumeThreshold: 8, window: 10s, resetTimeout: 30s }') })
    replicas = await Promise.all([0, 1, 2].map(() => spawnGateway(dir, { REDIS_URL: redisUrl })))
  })
  afterAll(async () => {
    await Promise.all((replicas ?? []).map((r) => r.stop('SIGKILL')))
    await service?.upstream.close()
  })

  it('still open the shared breaker when no replica alone reaches volumeThreshold', async () => {
    service.fail(true)
    for (let i = 0; i < 9; i++) expect((await get(`${replicas[i % 3]?.url}/${route}`)).status).toBe(500) // 3 each, threshold 8
    for (const replica of replicas) await waitFor(async () => (await get(`${replica.url}/${route}`)).code === 'circuit_open', { timeoutMs: 2_000, what: 'every replica to open' })
  })
})

describe('breakers while Redis is away (own Redis)', () => {
  let redis: TestRedis
  let service: Awaited<ReturnType<typeof switchable>>
  let a: GatewayProcess, b: GatewayProcess
  beforeAll(async () => {
    redis = await startRedis()
    service = await switchable('local')
    const dir = await makeRoutesDir({ 'cb.yaml': breakerRoute('local', service.upstream.url, '{ errorThresholdPercentage: 50, volumeThreshold: 3, window: 10s, resetTimeout: 20s }') })
    ;[a, b] = await Promise.all([spawnGateway(dir, { REDIS_URL: redis.url }), spawnGateway(dir, { REDIS_URL: redis.url })])
  })
  afterAll(async () => {
    await Promise.all([a?.stop('SIGKILL'), b?.stop('SIGKILL')])
    await redis?.stop()
    await service?.upstream.close()
  })

  it('keep working on each replica alone, and the fleet learns the open state when Redis is back', async () => {
    await redis.stop()
    await waitFor(async () => ((await (await request(`${a.adminUrl}/readyz`)).body.json()) as { components: { state: { status: string } } }).components.state.status === 'degraded', { what: 'A to notice' })
    service.fail(true)
    for (let i = 0; i < 3; i++) expect((await get(`${a.url}/local`)).status).toBe(500)
    expect((await get(`${a.url}/local`)).code).toBe('circuit_open')
    expect((await get(`${b.url}/local`)).status).toBe(500) // B decides alone: one failure is below its volume
    await redis.start()
    await waitFor(async () => (await get(`${b.url}/local`)).code === 'circuit_open', { timeoutMs: 10_000, intervalMs: 100, what: 'B to learn the open state' })
    expect((await get(`${a.url}/local`)).code).toBe('circuit_open')
  })
})

describe('what a breaker counts (one process, no Redis)', () => {
  const options = '{ errorThresholdPercentage: 50, volumeThreshold: 3, window: 10s, resetTimeout: 20s }'

  it('counts an upstream that cannot be reached: 502 until the breaker opens, then 503 circuit_open', async () => {
    const port = await freePort() // nothing listens there
    const gateway = await startGateway({ 'cb.yaml': breakerRoute('down', `http://127.0.0.1:${port}`, options) })
    try {
      for (let i = 0; i < 3; i++) expect((await get(`${gateway.url}/down`)).code).toBe('upstream_unreachable')
      expect((await get(`${gateway.url}/down`)).code).toBe('circuit_open')
    } finally {
      await gateway.close()
    }
  })

  it('does not count a client that went away before the upstream answered', async () => {
    let slow = true
    const gone: IncomingMessage[] = []
    const upstream = await startUpstream('slow', (req, res) => {
      if (!slow) return void res.writeHead(200, { 'content-type': 'text/plain' }).end('ok')
      // Holds the request until the gateway gives it up on the client's behalf.
      req.socket.once('close', () => gone.push(req))
    })
    const gateway = await startGateway({ 'cb.yaml': breakerRoute('slow', upstream.url, options) })
    try {
      for (let i = 0; i < 4; i++) {
        await expect(request(`${gateway.url}/slow`, { signal: AbortSignal.timeout(100) })).rejects.toThrow()
        await waitFor(() => gone.length === i + 1, { what: 'the gateway to abort the upstream request' })
      }
      slow = false
      const answer = await get(`${gateway.url}/slow`)
      expect(answer.status).toBe(200)
      expect(answer.text).toBe('ok')
    } finally {
      await gateway.close()
      await upstream.close()
    }
  })
})

describe('a replica that dies holding the fleet\'s probe', () => {
  const redisUrl = inject('redisUrl')
  const route = `cb-probe-${process.pid}`
  it('holds the fleet up no longer than the probe could last (its timeouts), not a reset period', async () => {
    let mode: 'fail' | 'hang' | 'ok' = 'fail'
    const upstream = await startUpstream('probed', (_req, res) => {
      if (mode === 'fail') res.writeHead(500).end('down')
      else if (mode === 'ok') res.end('up')
    })
    // resetTimeout 8 s; a probe can last 1.5 s at most (connect 500 ms + response 1 s): the lock lives that long.
    const files = {
      'r.yaml': `routes:\n  - name: ${route}\n    prefix: /probe\n    upstreams: [${upstream.url}]\n    timeout: { connect: 500ms, response: 1s }\n    circuitBreaker: { volumeThreshold: 2, errorThresholdPercentage: 50, resetTimeout: 8s }\n`,
    }
    const doomed = await spawnGateway(await makeRoutesDir(files), { REDIS_URL: redisUrl })
    const survivor = await startGateway(files, {}, { REDIS_URL: redisUrl })
    try {
      for (let i = 0; i < 3; i++) await get(`${doomed.url}/probe`)
      await waitFor(async () => (await get(`${survivor.url}/probe`)).code === 'circuit_open', { what: 'the breaker to open on the survivor' })
      mode = 'hang'
      // After the open period the doomed replica takes the probe, which hangs; then it dies holding the lock.
      const probe = request(`${doomed.url}/probe`).catch(() => undefined)
      const before = upstream.requests.length
      await waitFor(async () => {
        if (upstream.requests.length > before) return true
        void request(`${doomed.url}/probe`).then((r) => r.body.dump(), () => undefined)
        return false
      }, { timeoutMs: 15_000, intervalMs: 200, what: 'the doomed replica to send the probe' })
      await doomed.stop('SIGKILL')
      await probe
      mode = 'ok'
      const took = await timeUntil(async () => (await get(`${survivor.url}/probe`)).status === 200, { timeoutMs: 6_000, what: 'the survivor to probe and close the breaker' })
      expect(took).toBeLessThan(3_000)
    } finally {
      await doomed.stop('SIGKILL')
      await survivor.close()
      await upstream.close()
    }
  }, 40_000)
})
