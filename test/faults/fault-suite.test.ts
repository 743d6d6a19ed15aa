import { randomUUID } from 'node:crypto'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { makeRoutesDir, spawnGateway, startGateway, type GatewayProcess, type TestGateway } from '../support/gateway.js'
import { startUpstream, type Upstream } from '../support/upstream.js'

// Faults under load, with the counts that matter: no idempotent request fails, the gateway itself answers no 5xx of
// its own making, nothing reaches an upstream twice. The other faults have their own suites (see README, Failure modes):
// a hung Redis (hung-redis), Redis killed (rate-limit), Consul down or back empty (consul-discovery), reloads under load
// (reload-under-load), SIGTERM under load (cli), a probe-lock owner killed (circuit-breaker).

interface Tally {
  readonly statuses: Map<number, number>
  readonly codes: Map<string, number>
}

const tally = (): Tally => ({ statuses: new Map(), codes: new Map() })
const count = <K>(map: Map<K, number>, key: K) => map.set(key, (map.get(key) ?? 0) + 1)

/** Sends `method` requests in `clients` parallel loops until `until()` says stop (bounded by `maxPerClient`), each with its own id. */
async function load(url: string, method: 'GET' | 'POST', clients: number, until: () => boolean, into: Tally, ids: string[], maxPerClient = 2_000): Promise<void> {
  await Promise.all(
    Array.from({ length: clients }, async () => {
      for (let i = 0; i < maxPerClient && !until(); i++) {
        const id = randomUUID()
        ids.push(id)
        const response = await request(url, { method, headers: { 'x-request-id': id, 'content-type': 'application/json' }, body: method === 'POST' ? `{"order":"${id}"}` : undefined })
        const text = await response.body.text()
        count(into.statuses, response.statusCode)
        if (String(response.headers['content-type']).startsWith('application/problem+json')) count(into.codes, (JSON.parse(text) as { code: string }).code)
      }
    }),
  )
}

describe('an instance killed under load (retry and outlier detection)', () => {
  let instances: Upstream[]
  let gateway: TestGateway
  const received = new Map<string, number>()
  beforeAll(async () => {
    const recording = (name: string) => async () =>
      startUpstream(name, (req, res) => {
        const id = String(req.headers['x-request-id'])
        received.set(id, (received.get(id) ?? 0) + 1)
        setTimeout(() => res.end(name), 5) // a little work, so the kill catches requests in flight
      })
    instances = [await recording('a')(), await recording('b')(), await recording('c')()]
    gateway = await startGateway({
      'r.yaml': `routes:
  - name: orders
    prefix: /orders
    upstreams: [${instances.map((i) => i.url).join(', ')}]
    retry: { attempts: 3, backoff: 5ms, budgetPercent: 50 }
    outlierDetection: { consecutiveFailures: 2, baseEjectionTime: 30s, maxEjectionPercent: 50 }
`,
    })
  })
  afterAll(async () => {
    await gateway?.close()
    await Promise.all((instances ?? []).map((i) => i.close()))
  })

  it('fails no GET, answers no 5xx of its own beyond the POSTs the dead instance had taken, and delivers nothing twice', async () => {
    const gets = tally()
    const posts = tally()
    const getIds: string[] = []
    const postIds: string[] = []
    let stop = false
    const started = Date.now()
    const running = Promise.all([
      load(`${gateway.url}/orders/item`, 'GET', 6, () => stop || Date.now() - started > 10_000, gets, getIds),
      load(`${gateway.url}/orders/new`, 'POST', 4, () => stop || Date.now() - started > 10_000, posts, postIds),
    ])
    await new Promise((resolve) => setTimeout(resolve, 700)) // load shaping: traffic on all three first
    await (instances[1] as Upstream).close() // killed: open connections reset, new ones refused
    await new Promise((resolve) => setTimeout(resolve, 1_500)) // load shaping: traffic after the kill
    stop = true
    await running

    expect(getIds.length).toBeGreaterThan(200)
    expect([...gets.statuses.keys()]).toEqual([200]) // every GET answered by a live instance
    // A POST that the dead instance had already taken cannot be retried (it may have run): 502, never a 500.
    for (const status of posts.statuses.keys()) expect([200, 502]).toContain(status)
    expect(posts.statuses.get(200) ?? 0).toBeGreaterThan(postIds.length * 0.9)
    for (const code of posts.codes.keys()) expect(code).toBe('upstream_unreachable')
    // nothing reached an upstream twice: GETs that were retried had failed before any instance answered them
    const twice = [...postIds, ...getIds].filter((id) => (received.get(id) ?? 0) > 1)
    expect(twice.filter((id) => postIds.includes(id))).toEqual([])
  })
})

describe('a replica killed', () => {
  const redisUrl = inject('redisUrl')
  const route = `fleet-${process.pid}`
  let upstream: Upstream
  let replicas: GatewayProcess[]
  beforeAll(async () => {
    upstream = await startUpstream('fleet')
    const dir = await makeRoutesDir({ 'r.yaml': `routes:\n  - name: ${route}\n    prefix: /fleet\n    upstreams: [${upstream.url}]\n    rateLimit: { key: route, limit: 60, window: 1h }\n` })
    replicas = await Promise.all([spawnGateway(dir, { REDIS_URL: redisUrl }), spawnGateway(dir, { REDIS_URL: redisUrl })])
  })
  afterAll(async () => {
    await Promise.all((replicas ?? []).map((r) => r.stop('SIGKILL')))
    await upstream?.close()
  })

  it('leaves the survivor serving with the fleet\'s shared state: the limit stays exact across the death', async () => {
    const [doomed, survivor] = replicas as [GatewayProcess, GatewayProcess]
    const statuses = tally()
    for (let i = 0; i < 30; i++) {
      const response = await request(`${doomed.url}/fleet`)
      await response.body.dump()
      count(statuses.statuses, response.statusCode)
    }
    await doomed.stop('SIGKILL')
    const ids: string[] = []
    await load(`${survivor.url}/fleet`, 'GET', 4, () => ids.length >= 60, statuses, ids, 15)
    // 60 admitted in all: the dead replica's 30 still count on the survivor; the rest refused, none failed
    expect(statuses.statuses.get(200)).toBe(60)
    expect(statuses.statuses.get(429)).toBe(30)
    expect([...statuses.statuses.keys()].sort()).toEqual([200, 429])
  })
})
