import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { startGateway, type TestGateway } from '../support/gateway.js'
import { waitFor } from '../support/poll.js'
import { startRedis, type TestRedis } from '../support/redis.js'
import { startUpstream, type Upstream } from '../support/upstream.js'

const OPS = 'ops-token-1234'
const ONCALL = 'oncall-token-5678'

describe('operator actions on a fleet of two replicas sharing one Redis', () => {
  let first: Upstream, second: Upstream, failing: Upstream
  let a: TestGateway, b: TestGateway
  let dir: string
  beforeAll(async () => {
    first = await startUpstream('first')
    second = await startUpstream('second')
    failing = await startUpstream('failing', (_req, res) => res.writeHead(500).end('no'))
    dir = await mkdtemp(join(tmpdir(), 'portico-tokens-'))
    await writeFile(join(dir, 'tokens'), `# name:token\nops:${OPS}\noncall:${ONCALL}\n`)
    const suffix = process.pid
    const files = {
      'r.yaml': `routes:
  - name: shop-${suffix}
    prefix: /shop
    upstreams: [${first.url}, ${second.url}]
    loadBalancer: round-robin
  - name: flaky-${suffix}
    prefix: /flaky
    upstreams: [${failing.url}]
    circuitBreaker: { volumeThreshold: 2, errorThresholdPercentage: 50, resetTimeout: 1h }
`,
    }
    const env = { REDIS_URL: inject('redisUrl'), PORTICO_ADMIN_TOKENS_FILE: join(dir, 'tokens') }
    ;[a, b] = await Promise.all([startGateway(files, {}, env), startGateway(files, {}, env)])
  })
  afterAll(async () => {
    await Promise.all([a, b].map((g) => g?.close()))
    await Promise.all([first, second, failing].map((u) => u?.close()))
    await rm(dir, { recursive: true, force: true })
  })

  const shop = `shop-${process.pid}`
  const flaky = `flaky-${process.pid}`
  const act = async (gateway: TestGateway, path: string, body: unknown, token: string | null = OPS) => {
    const response = await request(`${gateway.adminUrl}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify(body),
    })
    return { status: response.statusCode, body: (await response.body.json()) as Record<string, unknown> }
  }
  const get = async (url: string) => {
    const response = await request(url)
    const text = await response.body.text()
    const json = String(response.headers['content-type']).includes('json') ? (JSON.parse(text) as Record<string, unknown>) : {}
    return { status: response.statusCode, headers: response.headers, json }
  }

  it('forces a breaker open on A, and B answers circuit_open within a second; auto gives it back', async () => {
    expect((await get(`${b.url}/shop`)).status).toBe(200)
    const forced = await act(a, `/admin/routes/${shop}/breaker`, { state: 'open', for: '10m', reason: 'shop db failover' })
    expect(forced.status).toBe(200)
    const started = Date.now()
    // Within a second by pub/sub; the bound leaves room for what the suite's two forks on two cores add to the polls
    // themselves (one CI run took exactly 1 000 ms on Node 24, and the breaker then stayed open for the next tests).
    try {
      await waitFor(async () => (await get(`${b.url}/shop`)).status === 503, { timeoutMs: 2_000, what: 'B to refuse the forced-open route' })
      expect(Date.now() - started).toBeLessThan(2_000)
    } catch (error) {
      await act(a, `/admin/routes/${shop}/breaker`, { state: 'auto' })
      throw error
    }
    const refused = await get(`${b.url}/shop`)
    expect(refused.json.code).toBe('circuit_open')
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(500)
    const view = await request(`${b.adminUrl}/admin/routes`, { headers: { authorization: `Bearer ${ONCALL}` } })
    const listed = ((await view.body.json()) as { routes: { name: string; forcedBreaker?: { state: string; by: string; reason: string } }[] }).routes.find((r) => r.name === shop)
    expect(listed?.forcedBreaker).toMatchObject({ state: 'open', by: 'ops', reason: 'shop db failover' })
    const ready = (await get(`${b.adminUrl}/readyz`)).json as { status: string; components: { operator: { breakers: Record<string, unknown> } } }
    expect(ready.status).toBe('ok')
    expect(ready.components.operator.breakers[shop]).toMatchObject({ state: 'open', by: 'ops' })
    const metrics = await request(`${b.adminUrl}/metrics`, { headers: { authorization: `Bearer ${OPS}` } })
    expect(await metrics.body.text()).toContain(`portico_circuit_breaker_forced{route="${shop}",state="open"} 1`)

    expect((await act(b, `/admin/routes/${shop}/breaker`, { state: 'auto' }, ONCALL)).status).toBe(200)
    await waitFor(async () => (await get(`${a.url}/shop`)).status === 200, { timeoutMs: 1_000, what: 'A to serve again' })
  })

  it('forces a breaker closed: a failing route keeps going to its upstream instead of tripping', async () => {
    expect((await act(a, `/admin/routes/${flaky}/breaker`, { state: 'closed', reason: 'known bad, testing a fix' })).status).toBe(200)
    await waitFor(async () => {
      const view = await request(`${b.adminUrl}/admin/routes`, { headers: { authorization: `Bearer ${OPS}` } })
      const route = ((await view.body.json()) as { routes: { name: string; forcedBreaker?: unknown }[] }).routes.find((r) => r.name === flaky)
      return route?.forcedBreaker !== undefined
    }, { timeoutMs: 1_000, what: 'B to see the forced state' })
    const statuses: number[] = []
    for (let i = 0; i < 8; i++) statuses.push((await get(`${b.url}/flaky`)).status)
    expect(statuses).toEqual(Array(8).fill(500)) // the upstream's own answers: never circuit_open
    expect((await act(a, `/admin/routes/${flaky}/breaker`, { state: 'auto' })).status).toBe(200)
    await waitFor(async () => {
      await get(`${b.url}/flaky`)
      return (await get(`${b.url}/flaky`)).json.code === 'circuit_open'
    }, { timeoutMs: 3_000, what: 'the breaker to trip once it is automatic again' })
  })

  it('ejects an instance on A: both replicas stop sending it traffic; admit brings it back', async () => {
    const ejected = await act(a, `/admin/routes/${shop}/instances/${encodeURIComponent(first.url)}/eject`, { for: '5m', reason: 'bad deploy' })
    expect(ejected.status).toBe(200)
    await waitFor(async () => {
      const before = first.requests.length
      for (let i = 0; i < 4; i++) await get(`${b.url}/shop/x`)
      return first.requests.length === before
    }, { timeoutMs: 1_000, what: 'B to stop sending to the ejected instance' })
    const before = first.requests.length
    for (let i = 0; i < 6; i++) expect((await get(`${a.url}/shop/y`)).status).toBe(200)
    for (let i = 0; i < 6; i++) expect((await get(`${b.url}/shop/y`)).status).toBe(200)
    expect(first.requests.length).toBe(before)

    expect((await act(b, `/admin/routes/${shop}/instances/${encodeURIComponent(first.url)}/admit`, { reason: 'rolled back' }, ONCALL)).status).toBe(200)
    await waitFor(async () => {
      for (let i = 0; i < 4; i++) await get(`${a.url}/shop/z`)
      return first.requests.length > before
    }, { timeoutMs: 1_000, what: 'A to send to the admitted instance again' })
  })

  it('refuses actions without a token or with a wrong one (401), and unknown routes or bad bodies clearly', async () => {
    expect((await act(a, `/admin/routes/${shop}/breaker`, { state: 'open' }, null)).status).toBe(401)
    expect((await act(a, `/admin/routes/${shop}/breaker`, { state: 'open' }, 'not-a-token')).status).toBe(401)
    const unknown = await act(a, '/admin/routes/nope/breaker', { state: 'open' })
    expect([unknown.status, unknown.body.code]).toEqual([404, 'not_found'])
    const bad = await act(a, `/admin/routes/${shop}/breaker`, { state: 'ajar' })
    expect([bad.status, bad.body.code]).toEqual([400, 'bad_request'])
    const badDuration = await act(a, `/admin/routes/${shop}/breaker`, { state: 'open', for: 'soon' })
    expect([badDuration.status, badDuration.body.code]).toEqual([400, 'bad_request'])
    expect((await get(`${a.url}/shop`)).status).toBe(200) // nothing was changed
  })

  it('lists both replicas in /admin/fleet and every action, with who and why, in /admin/audit', async () => {
    const fleetOf = async (gateway: TestGateway) => {
      const response = await request(`${gateway.adminUrl}/admin/fleet`, { headers: { authorization: `Bearer ${OPS}` } })
      return (await response.body.json()) as { self: string; replicas: { id: string; version: string; routeTableVersion: number; health: string; uptimeSeconds: number }[] }
    }
    const [fromA, fromB] = [await fleetOf(a), await fleetOf(b)]
    expect(fromA.self).not.toBe(fromB.self)
    // other test files' replicas may share this Redis: these two are among them, each as it described itself
    for (const id of [fromA.self, fromB.self]) {
      expect(fromB.replicas.find((r) => r.id === id)).toMatchObject({ version: expect.any(String), routeTableVersion: 1, health: expect.any(String), uptimeSeconds: expect.any(Number) })
    }
    const audit = await request(`${a.adminUrl}/admin/audit`, { headers: { authorization: `Bearer ${ONCALL}` } })
    const { entries } = (await audit.body.json()) as { entries: { by: string; action: string; route: string; reason?: string; instance?: string }[] }
    const mine = entries.filter((e) => e.route === shop || e.route === flaky)
    expect(mine.map((e) => [e.action, e.by])).toEqual(
      expect.arrayContaining([
        ['breaker open', 'ops'],
        ['breaker auto', 'oncall'],
        ['breaker closed', 'ops'],
        ['eject', 'ops'],
        ['admit', 'oncall'],
      ]),
    )
    expect(mine.find((e) => e.action === 'eject')).toMatchObject({ reason: 'bad deploy', instance: first.url })
  })
})

describe('operator actions when Redis is unreachable', () => {
  let redis: TestRedis
  let gateway: TestGateway
  let upstream: Upstream
  beforeAll(async () => {
    redis = await startRedis()
    upstream = await startUpstream('alone')
    gateway = await startGateway({ 'r.yaml': `routes:\n  - name: alone\n    prefix: /alone\n    upstreams: [${upstream.url}]\n` }, {}, { REDIS_URL: redis.url, PORTICO_ADMIN_TOKEN: OPS })
  })
  afterAll(async () => {
    await gateway?.close()
    await upstream?.close()
    await redis?.stop()
  })

  it('answers 503 state_unavailable and changes nothing, rather than acting on one replica only', async () => {
    await redis.stop()
    await waitFor(async () => ((await (await request(`${gateway.adminUrl}/readyz`)).body.json()) as { components: { state: { status: string } } }).components.state.status === 'degraded', { what: 'the replica to notice' })
    const response = await request(`${gateway.adminUrl}/admin/routes/alone/breaker`, { method: 'POST', headers: { authorization: `Bearer ${OPS}`, 'content-type': 'application/json' }, body: '{"state":"open"}' })
    expect(response.statusCode).toBe(503)
    expect(((await response.body.json()) as { code: string }).code).toBe('state_unavailable')
    const served = await request(`${gateway.url}/alone`)
    await served.body.dump()
    expect(served.statusCode).toBe(200)
  })
})
