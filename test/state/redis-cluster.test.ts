import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startGateway, type TestGateway } from '../support/gateway.js'
import { waitFor } from '../support/poll.js'
import { startRedisCluster, startRedisSentinel, type TestRedisCluster, type TestRedisSentinel } from '../support/redis-cluster.js'
import { startUpstream, type Upstream } from '../support/upstream.js'

const stateOf = async (gateway: TestGateway) =>
  ((await (await request(`${gateway.adminUrl}/readyz`)).body.json()) as { components: { state: { status: string; detail?: string } } }).components.state

const statusOf = async (url: string): Promise<number> => {
  const response = await request(url)
  await response.body.dump()
  return response.statusCode
}

const limitedRoutes = (upstream: string, names: readonly string[], limit: number) =>
  `routes:\n${names.map((name) => `  - name: ${name}\n    prefix: /${name}\n    upstreams: [${upstream}]\n    rateLimit: { key: route, limit: ${limit}, window: 1h }\n`).join('')}`

describe('shared state on a real Redis Cluster (3 masters, 3 replicas)', () => {
  let cluster: TestRedisCluster
  let upstream: Upstream
  let replicas: TestGateway[]
  let routes: string[]
  beforeAll(async () => {
    cluster = await startRedisCluster()
    upstream = await startUpstream('clustered')
    // two routes whose keys ({route}: one slot each) live on different masters
    routes = [`alpha${process.pid}`]
    for (let i = 0; routes.length < 2; i++) {
      const candidate = `beta${process.pid}x${i}`
      if ((await cluster.masterOf(`{${candidate}}`)) !== (await cluster.masterOf(`{${routes[0]}}`))) routes.push(candidate)
    }
    const files = { 'r.yaml': limitedRoutes(upstream.url, routes, 5) }
    replicas = await Promise.all([startGateway(files, {}, { REDIS_URL: cluster.url }), startGateway(files, {}, { REDIS_URL: cluster.url })])
    await waitFor(async () => (await Promise.all(replicas.map(stateOf))).every((s) => s.status === 'ok'), { timeoutMs: 10_000, what: 'both replicas to reach the cluster' })
  }, 60_000)
  afterAll(async () => {
    await Promise.all((replicas ?? []).map((r) => r.close()))
    await upstream?.close()
    await cluster?.stop()
  })

  it('holds each limit exactly across two replicas, for routes whose slots live on different masters', async () => {
    for (const route of routes) {
      const statuses: number[] = []
      for (let i = 0; i < 8; i++) statuses.push(await statusOf(`${(replicas[i % 2] as TestGateway).url}/${route}`))
      expect(statuses.filter((s) => s === 200)).toHaveLength(5)
      expect(statuses.filter((s) => s === 429)).toHaveLength(3)
    }
  })

  it('lives through a master killed: no 5xx while the cluster fails over, and shared state resumes', async () => {
    const [failing, untouched] = routes as [string, string]
    await cluster.killMaster(await cluster.masterOf(`{${failing}}`))
    const statuses = new Set<number>()
    const started = Date.now()
    await waitFor(
      async () => {
        for (const replica of replicas) statuses.add(await statusOf(`${replica.url}/${failing}`))
        return Date.now() - started > 1_500 && (await Promise.all(replicas.map(stateOf))).every((s) => s.status === 'ok')
      },
      { timeoutMs: 20_000, intervalMs: 100, what: 'the cluster to fail over and both replicas to say shared state is ok' },
    )
    expect([...statuses].filter((s) => s >= 500)).toEqual([])
    // the route on an untouched master is still refused (its count never left; right after a failover a command may
    // still time out and fall back to the replica's local share, so exactness is not asserted here)
    const after: number[] = []
    for (let i = 0; i < 8; i++) after.push(await statusOf(`${(replicas[i % 2] as TestGateway).url}/${untouched}`))
    expect(after.filter((s) => s >= 500)).toEqual([])
    expect(after.at(-1)).toBe(429)
  })
})

describe('REDIS_URL naming one node of a Redis Cluster', () => {
  let cluster: TestRedisCluster
  let upstream: Upstream
  let gateway: TestGateway
  beforeAll(async () => {
    cluster = await startRedisCluster()
    upstream = await startUpstream('misconfigured')
    // a route whose slot is not on the named node: every command on it is MOVED
    const named = cluster.ports[0] as number
    let route = ''
    for (let i = 0; !route; i++) if ((await cluster.masterOf(`{moved${i}}`)) !== named) route = `moved${i}`
    gateway = await startGateway({ 'r.yaml': limitedRoutes(upstream.url, [route], 100) + `  - name: moved-probe\n    prefix: /probe\n    upstreams: [${upstream.url}]\n` }, {}, { REDIS_URL: `redis://127.0.0.1:${named}` })
    ;(gateway as TestGateway & { route?: string }).route = route
  }, 60_000)
  afterAll(async () => {
    await gateway?.close()
    await upstream?.close()
    await cluster?.stop()
  })

  it('is not "Redis is fine": readiness and portico_shared_state_up say the cluster refuses, and requests still pass', async () => {
    const route = (gateway as TestGateway & { route?: string }).route as string
    expect(await statusOf(`${gateway.url}/${route}`)).toBe(200)
    await waitFor(async () => (await stateOf(gateway)).status === 'degraded', { what: 'readiness to say degraded' })
    expect((await stateOf(gateway)).detail).toMatch(/MOVED/)
    const metrics = await (await request(`${gateway.adminUrl}/metrics`)).body.text()
    expect(metrics).toContain('portico_shared_state_up 0')
    for (let i = 0; i < 5; i++) expect(await statusOf(`${gateway.url}/${route}`)).toBe(200)
  })
})

describe('shared state through Redis Sentinel', () => {
  let sentinel: TestRedisSentinel
  let upstream: Upstream
  let replicas: TestGateway[]
  const route = `sentinel${process.pid}`
  beforeAll(async () => {
    sentinel = await startRedisSentinel()
    upstream = await startUpstream('watched')
    const files = { 'r.yaml': limitedRoutes(upstream.url, [route], 5) }
    replicas = await Promise.all([startGateway(files, {}, { REDIS_URL: sentinel.url }), startGateway(files, {}, { REDIS_URL: sentinel.url })])
    await waitFor(async () => (await Promise.all(replicas.map(stateOf))).every((s) => s.status === 'ok'), { timeoutMs: 10_000, what: 'both replicas to reach the master' })
  }, 60_000)
  afterAll(async () => {
    await Promise.all((replicas ?? []).map((r) => r.close()))
    await upstream?.close()
    await sentinel?.stop()
  })

  it('holds a limit exactly across two replicas, and follows the master through a failover with no 5xx', async () => {
    const statuses: number[] = []
    for (let i = 0; i < 8; i++) statuses.push(await statusOf(`${(replicas[i % 2] as TestGateway).url}/${route}`))
    expect(statuses.filter((s) => s === 200)).toHaveLength(5)

    await sentinel.killMaster()
    const seen = new Set<number>()
    await waitFor(
      async () => {
        for (const replica of replicas) seen.add(await statusOf(`${replica.url}/${route}`))
        return (await sentinel.currentMaster()) !== sentinel.masterPort && (await Promise.all(replicas.map(stateOf))).every((s) => s.status === 'ok')
      },
      { timeoutMs: 30_000, intervalMs: 200, what: 'the sentinels to promote the replica and both gateways to follow' },
    )
    expect([...seen].filter((s) => s >= 500)).toEqual([])
    // counting resumes on the new master (what the old one had not yet replicated may be lost: Redis replicates
    // asynchronously), so the route is refused again within a few requests
    const after: number[] = []
    for (let i = 0; i < 12; i++) after.push(await statusOf(`${(replicas[i % 2] as TestGateway).url}/${route}`))
    expect(after.filter((s) => s >= 500)).toEqual([])
    expect(after.at(-1)).toBe(429)
  })
})
