import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { startGateway, type TestGateway } from '../support/gateway.js'
import { registerTtlInstance, startConsul, type TestConsul, type TtlInstance } from '../support/consul.js'
import { timeUntil, waitFor } from '../support/poll.js'
import { startUpstream, type Upstream } from '../support/upstream.js'

const upstreamOf = async (url: string): Promise<string> => {
  const response = await request(url)
  const text = await response.body.text()
  return response.statusCode === 200 ? (JSON.parse(text) as { upstream: string }).upstream : `${response.statusCode}:${(JSON.parse(text) as { code: string }).code}`
}

/** Which upstreams answered `count` requests in a row. */
const spread = async (url: string, count: number): Promise<Set<string>> => {
  const seen = new Set<string>()
  for (let i = 0; i < count; i++) seen.add(await upstreamOf(url))
  return seen
}

describe('routes to Consul services (shared agent)', () => {
  const consul = inject('consulAddress')
  const service = `orders-${process.pid}`
  let a: Upstream, b: Upstream, c: Upstream
  let gateway: TestGateway
  const registered: TtlInstance[] = []
  beforeAll(async () => {
    ;[a, b, c] = await Promise.all([startUpstream('a'), startUpstream('b'), startUpstream('c')])
    registered.push(await registerTtlInstance(consul, { name: service, id: `${service}-a`, port: a.port }))
    registered.push(await registerTtlInstance(consul, { name: service, id: `${service}-b`, port: b.port }))
    gateway = await startGateway(
      { 'svc.yaml': `routes:\n  - name: orders\n    prefix: /orders\n    service: ${service}\n  - name: ghost\n    prefix: /ghost\n    service: ghost-${process.pid}\n` },
      {},
      { CONSUL_HTTP_ADDR: consul },
    )
    await waitFor(async () => (await spread(`${gateway.url}/orders`, 4)).size === 2, { what: 'both instances to get traffic' })
  })
  afterAll(async () => {
    await gateway?.close()
    await Promise.all(registered.map((r) => r.deregister().catch(() => undefined)))
    await Promise.all([a, b, c].map((u) => u?.close()))
  })

  it('sends traffic to every passing instance', async () => {
    expect(await spread(`${gateway.url}/orders`, 10)).toEqual(new Set(['a', 'b']))
  })

  it('stops sending new requests to an instance within 1 s of its check going critical', async () => {
    await registered[0]?.fail()
    const took = await timeUntil(async () => (await spread(`${gateway.url}/orders`, 4)).has('a') === false, { timeoutMs: 3_000, what: 'a to leave' })
    expect(took).toBeLessThan(1_000)
    expect(await spread(`${gateway.url}/orders`, 10)).toEqual(new Set(['b']))
    await registered[0]?.pass()
    await waitFor(async () => (await spread(`${gateway.url}/orders`, 4)).has('a'), { what: 'a to come back' })
  })

  it('adds a newly passing instance within 1 s', async () => {
    const started = Date.now()
    registered.push(await registerTtlInstance(consul, { name: service, id: `${service}-c`, port: c.port }))
    await waitFor(async () => (await spread(`${gateway.url}/orders`, 6)).has('c'), { timeoutMs: 3_000, what: 'c to get traffic' })
    expect(Date.now() - started).toBeLessThan(1_000)
  })

  it('drops a deregistered instance within 1 s', async () => {
    const started = Date.now()
    await registered[2]?.deregister()
    await waitFor(async () => !(await spread(`${gateway.url}/orders`, 6)).has('c'), { timeoutMs: 3_000, what: 'c to leave' })
    expect(Date.now() - started).toBeLessThan(1_000)
  })

  it('answers 503 no_instance for a service with no passing instance', async () => {
    const response = await request(`${gateway.url}/ghost/x`)
    expect(response.statusCode).toBe(503)
    expect(response.headers['content-type']).toMatch(/^application\/problem\+json/)
    expect(await response.body.json()).toMatchObject({ code: 'no_instance', detail: expect.stringContaining(`ghost-${process.pid}`) })
  })

  it('shows the instances of each route on the admin API', async () => {
    const body = (await (await request(`${gateway.adminUrl}/admin/routes`)).body.json()) as { routes: { name: string; instances: { origin: string }[] }[] }
    const orders = body.routes.find((r) => r.name === 'orders')
    expect(orders?.instances.map((i) => i.origin).sort()).toEqual([a.url, b.url].sort())
  })
})

describe('a split over Consul services, mirrored to another (shared agent)', () => {
  const consul = inject('consulAddress')
  const [stable, canary, shadow] = ['stable', 'canary', 'shadow'].map((name) => `${name}-${process.pid}`) as [string, string, string]
  let upstreams: Upstream[] = []
  const copies: string[] = []
  let gateway: TestGateway
  const registered: TtlInstance[] = []
  beforeAll(async () => {
    upstreams = await Promise.all([startUpstream('stable'), startUpstream('canary'), startUpstream('shadow', (req, res) => {
        copies.push(req.url ?? '')
        res.end()
      })])
    for (const [index, service] of [stable, canary, shadow].entries()) registered.push(await registerTtlInstance(consul, { name: service, id: `${service}-1`, port: (upstreams[index] as Upstream).port }))
    gateway = await startGateway(
      { 'split.yaml': `routes:\n  - name: shop\n    prefix: /shop\n    split:\n      - { service: ${stable}, weight: 50 }\n      - { service: ${canary}, weight: 50 }\n    mirror: { service: ${shadow} }\n` },
      {},
      { CONSUL_HTTP_ADDR: consul },
    )
    await waitFor(async () => (await spread(`${gateway.url}/shop/x`, 10)).size === 2, { what: 'both services of the split to get traffic' })
  })
  afterAll(async () => {
    await gateway?.close()
    await Promise.all(registered.map((r) => r.deregister().catch(() => undefined)))
    await Promise.all(upstreams.map((u) => u.close()))
  })

  it('follows every service of the split and of the mirror; a service with no passing instance gives its share away', async () => {
    // its instances come by their own blocking query: copies of the requests from then on reach it
    await waitFor(async () => (await spread(`${gateway.url}/shop/x`, 2)) && (copies.length >= 5 || undefined), { what: 'the mirror\'s service to get copies' })
    expect(copies[0]).toBe('/shop/x')
    await registered[1]?.fail()
    await waitFor(async () => !(await spread(`${gateway.url}/shop/x`, 10)).has('canary'), { timeoutMs: 3_000, what: 'the canary service to leave' })
    expect(await spread(`${gateway.url}/shop/x`, 40)).toEqual(new Set(['stable']))
    const metrics = await request(`${gateway.adminUrl}/metrics`).then((r) => r.body.text())
    expect(metrics).toContain(`portico_split_target_available{route="shop",target="${canary}"} 0`)
    await registered[1]?.pass()
    await waitFor(async () => (await spread(`${gateway.url}/shop/x`, 10)).has('canary'), { what: 'the canary service to take its share again' })
  })
})

describe('when Consul goes away (own agent)', () => {
  let consul: TestConsul
  let one: Upstream, two: Upstream
  let gateway: TestGateway
  beforeAll(async () => {
    consul = await startConsul()
    ;[one, two] = await Promise.all([startUpstream('one'), startUpstream('two')])
    await registerTtlInstance(consul.address, { name: 'billing', id: 'billing-1', port: one.port })
    gateway = await startGateway({ 'b.yaml': 'routes:\n  - name: billing\n    prefix: /billing\n    service: billing\n' }, {}, { CONSUL_HTTP_ADDR: consul.address })
    await waitFor(async () => (await upstreamOf(`${gateway.url}/billing`)) === 'one', { what: 'billing to route' })
  })
  afterAll(async () => {
    await gateway?.close()
    await consul?.stop()
    await Promise.all([one?.close(), two?.close()])
  })

  const readiness = async () => {
    const response = await request(`${gateway.adminUrl}/readyz`)
    return { status: response.statusCode, body: (await response.body.json()) as { status: string; components: { discovery: { status: string; services: Record<string, { stale: boolean }> } } } }
  }

  it('keeps serving the last known instances and says discovery is stale', async () => {
    await consul.stop()
    await waitFor(async () => (await readiness()).body.components.discovery.services.billing?.stale, { what: 'discovery to turn stale' })
    const ready = await readiness()
    expect(ready.status).toBe(200)
    expect(ready.body.status).toBe('degraded')
    expect(ready.body.components.discovery.status).toBe('degraded')
    for (let i = 0; i < 5; i++) expect(await upstreamOf(`${gateway.url}/billing`)).toBe('one')
  })

  it('recovers without a restart when Consul is back', async () => {
    await consul.start()
    await registerTtlInstance(consul.address, { name: 'billing', id: 'billing-2', port: two.port })
    await waitFor(async () => (await upstreamOf(`${gateway.url}/billing`)) === 'two', { timeoutMs: 10_000, what: 'updates to flow again' })
    await waitFor(async () => (await readiness()).body.components.discovery.status === 'ok', { what: 'discovery to be current' })
  })
})

describe('when Consul comes back empty (own agent restarted without its state)', () => {
  it('keeps the last known instances while the service re-registers: no no_instance in between', async () => {
    const consul = await startConsul()
    const one = await startUpstream('one')
    await registerTtlInstance(consul.address, { name: 'ledger', id: 'ledger-1', port: one.port })
    const gateway = await startGateway({ 'l.yaml': 'routes:\n  - name: ledger\n    prefix: /ledger\n    service: ledger\n' }, {}, { CONSUL_HTTP_ADDR: consul.address })
    try {
      await waitFor(async () => (await upstreamOf(`${gateway.url}/ledger`)) === 'one', { what: 'ledger to route' })
      await consul.stop()
      await consul.start() // a dev agent starts empty: its first answer has no instance of ledger
      const seen = new Set<string>()
      const until = Date.now() + 2_000
      while (Date.now() < until) seen.add(await upstreamOf(`${gateway.url}/ledger`))
      await registerTtlInstance(consul.address, { name: 'ledger', id: 'ledger-1', port: one.port })
      for (let i = 0; i < 5; i++) seen.add(await upstreamOf(`${gateway.url}/ledger`))
      expect([...seen]).toEqual(['one'])
    } finally {
      await gateway.close()
      await consul.stop()
      await one.close()
    }
  }, 60_000) // two agent starts: slow on a busy machine
})

describe('routes published in Consul meta (opt-in)', () => {
  const consul = inject('consulAddress')
  let svc: Upstream, fileOwned: Upstream
  let gateway: TestGateway
  let published: TtlInstance[] = []
  beforeAll(async () => {
    ;[svc, fileOwned] = await Promise.all([startUpstream('published'), startUpstream('file')])
    gateway = await startGateway(
      { 'own.yaml': `routes:\n  - name: owned\n    prefix: /owned\n    upstreams: [${fileOwned.url}]\n` },
      { 'consul-routes': true },
      { CONSUL_HTTP_ADDR: consul },
    )
  })
  afterAll(async () => {
    await gateway?.close()
    await Promise.all(published.map((p) => p.deregister()))
    await Promise.all([svc?.close(), fileOwned?.close()])
  })

  it('routes a prefix a service publishes, and lets a route file win a conflict', async () => {
    published = [
      await registerTtlInstance(consul, { name: `pub-${process.pid}`, id: `pub-${process.pid}`, port: svc.port, tags: ['portico-route'], meta: { 'portico-prefix': `/pub${process.pid}` } }),
      await registerTtlInstance(consul, { name: `steal-${process.pid}`, id: `steal-${process.pid}`, port: svc.port, tags: ['portico-route'], meta: { 'portico-prefix': '/owned' } }),
    ]
    await waitFor(async () => (await upstreamOf(`${gateway.url}/pub${process.pid}/x`)) === 'published', { what: 'the published route' })
    expect(await upstreamOf(`${gateway.url}/owned`)).toBe('file')
    type Admin = { routes: { name: string; source: { file: string } }[]; errors: { file: string; message: string }[] }
    // the two registrations reach the gateway in separate catalog updates: wait for the second one too
    const body = await waitFor(async () => {
      const admin = (await (await request(`${gateway.adminUrl}/admin/routes`)).body.json()) as Admin
      return admin.errors.some((e) => e.file === `consul:steal-${process.pid}`) ? admin : undefined
    }, { what: 'the conflicting published route to be refused' })
    expect(body.routes.find((r) => r.name === `pub-${process.pid}`)?.source.file).toBe(`consul:pub-${process.pid}`)
    expect(body.errors).toContainEqual(expect.objectContaining({ file: `consul:steal-${process.pid}`, message: expect.stringContaining('prefix "/owned" is already routed by "owned"') }))
    expect(await upstreamOf(`${gateway.url}/owned`)).toBe('file')
  })
})
