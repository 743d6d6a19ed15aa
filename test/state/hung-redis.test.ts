import { setTimeout as pace } from 'node:timers/promises'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startGateway, type TestGateway } from '../support/gateway.js'
import { waitFor } from '../support/poll.js'
import { startRedis, type TestRedis } from '../support/redis.js'
import { routeFile } from '../support/routes.js'
import { startUpstream, type Upstream } from '../support/upstream.js'

describe('a hung Redis (own Redis, frozen with SIGSTOP)', () => {
  let redis: TestRedis
  let upstream: Upstream
  let gateway: TestGateway
  beforeAll(async () => {
    redis = await startRedis()
    upstream = await startUpstream('limited')
    // 40 a second for everyone; the traffic below is about half of it.
    gateway = await startGateway({ 'r.yaml': routeFile('limited', '/limited', upstream.url, 'rateLimit: { key: route, limit: 40, window: 1s }') }, {}, { REDIS_URL: redis.url })
    await waitFor(async () => (await stateOf(gateway)) === 'ok', { what: 'shared state to be up' })
  })
  afterAll(async () => {
    redis?.resume()
    await gateway?.close()
    await redis?.stop()
    await upstream?.close()
  })

  /** Requests about every 50 ms (load shaping, not a wait for a condition) for `ms`. */
  const traffic = async (ms: number) => {
    const answers: { status: number; took: number; at: number }[] = []
    const started = performance.now()
    while (performance.now() - started < ms) {
      const sent = performance.now()
      const response = await request(`${gateway.url}/limited`)
      await response.body.dump()
      answers.push({ status: response.statusCode, took: performance.now() - sent, at: sent - started })
      await pace(50)
    }
    return answers
  }

  it('stops waiting on it within a second, says so, and is not poisoned by what it runs when it wakes', async () => {
    expect((await traffic(1_000)).every((a) => a.status === 200)).toBe(true)
    redis.pause()
    const [during] = await Promise.all([traffic(3_000), waitFor(async () => (await stateOf(gateway)) === 'degraded', { timeoutMs: 3_000, what: 'readiness to say Redis is not answering' })])
    redis.resume()
    const after = await traffic(2_500)
    expect(during.every((a) => a.status === 200)).toBe(true)
    // after the first second of the freeze no request waits for Redis any more
    expect(during.filter((a) => a.at > 1_000).every((a) => a.took < 100)).toBe(true)
    expect(after.filter((a) => a.status !== 200)).toEqual([])
  })
})

async function stateOf(gateway: TestGateway): Promise<string> {
  const response = await request(`${gateway.adminUrl}/readyz`)
  return ((await response.body.json()) as { components: { state: { status: string } } }).components.state.status
}
