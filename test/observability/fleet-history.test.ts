import { Redis } from 'ioredis'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startGateway, type TestGateway } from '../support/gateway.js'
import { windowTotal } from '../support/history.js'
import { waitFor } from '../support/poll.js'
import { startRedis, type TestRedis } from '../support/redis.js'
import { routeFile } from '../support/routes.js'
import { startUpstream, type Upstream } from '../support/upstream.js'

interface RouteHistory {
  times: number[]
  fleet?: number[]
  requests: (number | null)[]
  serverErrors: (number | null)[]
  p50: (number | null)[]
  p99: (number | null)[]
}

describe('the fleet\'s traffic history, through a real Redis', () => {
  let redis: TestRedis
  let client: Redis
  let upstream: Upstream
  let replicas: TestGateway[]
  beforeAll(async () => {
    redis = await startRedis()
    client = new Redis(redis.url)
    // Fast answers, and slow ones (300 ms) on /catalog/slow.
    upstream = await startUpstream('catalog', (req, res) => {
      setTimeout(() => res.end('ok'), req.url?.includes('slow') ? 300 : 0)
    })
    const files = { 'r.yaml': routeFile('catalog', '/catalog', upstream.url) }
    replicas = await Promise.all([startGateway(files, {}, { REDIS_URL: redis.url }), startGateway(files, {}, { REDIS_URL: redis.url })])
  })
  afterAll(async () => {
    await Promise.all((replicas ?? []).map((r) => r.close()))
    client?.disconnect()
    await upstream?.close()
    await redis?.stop()
  })

  const historyOf = async (replica: TestGateway): Promise<RouteHistory> => {
    const response = await request(`${replica.adminUrl}/admin/routes/catalog/history`)
    expect(response.statusCode).toBe(200)
    return (await response.body.json()) as RouteHistory
  }

  it('sums the replicas\' slots, their latencies from the summed buckets', async () => {
    const [a, b] = replicas as [TestGateway, TestGateway]
    // Someone watches on a (and so it sums the others' slots) from now on.
    await historyOf(a)
    await Promise.all(Array.from({ length: 99 }, async () => (await request(`${a.url}/catalog/fast`)).body.dump()))
    await waitFor(async () => windowTotal((await historyOf(a)).requests) === 99, { timeoutMs: 15_000, what: 'a\'s own requests in a closed slot' })
    // then one slow answer, on b alone
    await (await request(`${b.url}/catalog/slow`)).body.dump()
    const view = await waitFor(async () => {
      const seen = await historyOf(a)
      return windowTotal(seen.requests) === 100 ? seen : undefined
    }, { timeoutMs: 15_000, what: 'a\'s history to hold b\'s request too' })
    const slots = view.times.map((_, i) => i).filter((i) => (view.requests[i] ?? 0) > 0)
    expect(slots.every((i) => view.fleet?.[i] === 1)).toBe(true)
    const slow = slots.find((i) => view.requests[i] === 1) as number
    // a never saw a slow answer: its 250–500 ms come from b's buckets
    expect(view.p50[slow]).toBeGreaterThanOrEqual(250)
    expect(view.p50[slow]).toBeLessThanOrEqual(500)
    expect(Math.max(...slots.filter((i) => i !== slow).map((i) => view.p99[i] ?? 0))).toBeLessThan(250)
    // b's own view, watched now for the first time, sums a's slots too
    await expect.poll(async () => windowTotal((await historyOf(b)).requests), { timeout: 10_000 }).toBe(100)
  })

  it('drops a replica\'s slot that is junk, says so, and keeps serving the rest', async () => {
    const [a] = replicas as [TestGateway, TestGateway]
    expect((await client.keys('portico:{history}:slot:*')).length).toBeGreaterThan(0)
    const before = windowTotal((await historyOf(a)).requests)
    // junk in the slot the next request counts in: fields that are no slot, counts that are no counts
    const slot = `portico:{history}:slot:${Math.floor(Date.now() / 5_000) * 5_000}`
    await client.hset(slot, 'intruder', '{"v":1,"routes":{"catalog":{"f":["lots"]}}}', 'junk', 'not json at all', 'big', JSON.stringify({ v: 1, routes: { catalog: { f: [1e12] } } }))
    await (await request(`${a.url}/catalog/fast`)).body.dump()
    await waitFor(async () => {
      const report = (await (await request(`${a.adminUrl}/readyz`)).body.json()) as { components: Record<string, { detail?: string }> }
      return /junk in Redis at portico:\{history\}:slot:/.test(report.components.state?.detail ?? '')
    }, { timeoutMs: 15_000, what: 'readiness to name the junk' })
    expect(windowTotal((await historyOf(a)).requests)).toBe(before + 1)
  })
})
