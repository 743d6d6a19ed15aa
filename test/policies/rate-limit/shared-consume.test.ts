import { Redis } from 'ioredis'
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { SharedConsume } from '../../../src/policies/rate-limit/shared-consume.js'
import { waitFor } from '../../support/poll.js'

/** A limiter that records the points of every consume it sends to Redis. */
function countingLimiter(redis: Redis, points: number, keyPrefix: string, duration = 60): { limiter: RateLimiterRedis; sent: number[] } {
  const sent: number[] = []
  const limiter = new RateLimiterRedis({ storeClient: redis, points, duration, keyPrefix, rejectIfRedisNotReady: true })
  const consume = limiter.consume.bind(limiter)
  limiter.consume = (key, pointsToConsume = 1, options) => {
    sent.push(Number(pointsToConsume))
    return consume(key, pointsToConsume, options)
  }
  return { limiter, sent }
}

const settled = (results: PromiseSettledResult<RateLimiterRes>[]) => ({
  admitted: results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : [])),
  refused: results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : [])),
})

/**
 * `turns` loop turns of `perTurn` requests for `key`, spread over `replicas` in turn, a turn every `paceMs` at most
 * (leases only pay, and are only taken, where a limit lasts longer than the reserve's RESERVE_MS); every outcome.
 */
async function drive(replicas: SharedConsume[], key: string, turns: number, perTurn: number, paceMs = 0) {
  const admitted: RateLimiterRes[] = []
  const refused: unknown[] = []
  for (let turn = 0; turn < turns; turn++) {
    if (paceMs > 0) await new Promise((resolve) => setTimeout(resolve, paceMs))
    const results = settled(await Promise.allSettled(Array.from({ length: perTurn }, (_, i) => (replicas[(turn + i) % replicas.length] as SharedConsume).take(key))))
    admitted.push(...results.admitted)
    refused.push(...results.refused)
  }
  return { admitted, refused }
}

describe('SharedConsume (real Redis)', () => {
  let redis: Redis
  let prefix: string
  beforeAll(async () => {
    redis = new Redis(inject('redisUrl'))
    await redis.ping()
  })
  afterAll(() => redis?.disconnect())
  const unique = (name: string) => (prefix = `${name}-${process.pid}-${Date.now()}`)
  const one = () => 1

  it('sends the requests of one loop turn as one consume per key, and admits exactly the limit', async () => {
    const { limiter, sent } = countingLimiter(redis, 10, unique('batch'))
    const shared = new SharedConsume(limiter, redis, one)
    const { admitted, refused } = settled(await Promise.allSettled(Array.from({ length: 40 }, () => shared.take('k'))))

    expect(sent).toEqual([40])
    expect(admitted.map((r) => r.consumedPoints)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    expect(admitted.map((r) => r.remainingPoints)).toEqual([9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    expect(refused).toHaveLength(30)
    expect(refused.every((r) => r instanceof RateLimiterRes && r.remainingPoints === 0 && r.msBeforeNext > 0)).toBe(true)
    expect(Number(await redis.get(`${prefix}:k`))).toBe(40)
  })

  it('keeps keys apart, and places the requests of batches in flight together right', async () => {
    const { limiter, sent } = countingLimiter(redis, 3, unique('keys'))
    const shared = new SharedConsume(limiter, redis, one)
    const first = ['a', 'b', 'a', 'b', 'a'].map((key) => shared.take(key))
    // A second turn's batch goes out before the first one's answer is back.
    await new Promise((resolve) => setImmediate(resolve))
    const second = ['a', 'b'].map((key) => shared.take(key))
    const results = await Promise.allSettled([...first, ...second])

    expect(sent).toEqual([3, 2, 1, 1])
    expect(results.map((r) => (r.status === 'fulfilled' ? r.value.consumedPoints : `over:${(r.reason as RateLimiterRes).consumedPoints}`))).toEqual([1, 1, 2, 2, 3, 'over:4', 3])
  })

  it('leases places to a busy key: most requests pass without Redis, and the limit still admits exactly its count', async () => {
    const { limiter, sent } = countingLimiter(redis, 4000, unique('lease'))
    const shared = new SharedConsume(limiter, redis, one)
    const { admitted, refused } = await drive([shared], 'k', 220, 20, 5)

    expect(admitted.map((r) => r.consumedPoints)).toEqual(Array.from({ length: 4000 }, (_, i) => i + 1))
    expect(admitted.map((r) => r.remainingPoints)).toEqual(Array.from({ length: 4000 }, (_, i) => 3999 - i))
    expect(refused).toHaveLength(400)
    expect(sent.length).toBeLessThan(220 / 2)
    expect(Math.max(...sent)).toBeGreaterThan(20) // a lease, not a batch: no turn has more than 20 requests
    // The reserved end (at least the last tenth) went request by request, a turn's batch at a time; so did the refused.
    expect(sent.slice(-40)).toEqual(Array.from({ length: 40 }, () => 20))
  })

  it('never leases past a fair part of what is left: two replicas on one key admit exactly the limit between them', async () => {
    const { limiter: limiterA, sent: sentA } = countingLimiter(redis, 4000, unique('fair'))
    const { limiter: limiterB, sent: sentB } = countingLimiter(redis, 4000, prefix)
    const two = () => 2
    const replicas = [new SharedConsume(limiterA, redis, two), new SharedConsume(limiterB, redis, two)]
    const { admitted, refused } = await drive(replicas, 'k', 120, 40, 5)

    expect(admitted.map((r) => r.consumedPoints).sort((a, b) => a - b)).toEqual(Array.from({ length: 4000 }, (_, i) => i + 1))
    expect(refused).toHaveLength(800)
    // Both leased (a lease is bigger than a replica's 20 requests of a turn), and no increment was more than a batch of
    // 20 and a quarter of what was left.
    expect(Math.max(...sentA)).toBeGreaterThan(20)
    expect(Math.max(...sentB)).toBeGreaterThan(20)
    expect(Math.max(...sentA, ...sentB)).toBeLessThanOrEqual(20 + 4000 / 4)
  })

  it('gives an idle lease back, so another replica can still use those places', async () => {
    const { limiter: limiterA } = countingLimiter(redis, 3000, unique('giveback'))
    const { limiter: limiterB } = countingLimiter(redis, 3000, prefix)
    const [a, b] = [new SharedConsume(limiterA, redis, one), new SharedConsume(limiterB, redis, one)]
    const fromA = await drive([a], 'k', 30, 20, 5)
    const leasedBy = async () => Number(await redis.get(`${prefix}:k`)) - fromA.admitted.length
    // A's last turn may have used up its lease exactly (or a stalled machine let it go idle): a few more turns of
    // another size leave it holding unused places.
    for (let turn = 0; turn < 10 && (await leasedBy()) === 0; turn++) fromA.admitted.push(...(await drive([a], 'k', 1, 7)).admitted)
    const leased = await leasedBy()
    expect(leased).toBeGreaterThan(0)

    // A's traffic stops; B takes what is left, then is refused while A holds its unused places.
    const fromB = await drive([b], 'k', 1, 3000 - fromA.admitted.length - leased)
    expect(fromB.refused).toHaveLength(0)
    await expect(b.take('k')).rejects.toBeInstanceOf(RateLimiterRes)

    // Back in Redis: A's unused places, and B's refused increment with them.
    await waitFor(async () => Number(await redis.get(`${prefix}:k`)) === 3000 - leased, { what: "A's unused places back in Redis" })
    const afterGiveBack = await drive([b], 'k', 1, leased + 5)
    expect(afterGiveBack.admitted).toHaveLength(leased)
    expect(fromA.admitted.length + fromB.admitted.length + afterGiveBack.admitted.length).toBe(3000)
  })

  it('does not give places back to a window other than the one they were taken from', async () => {
    const { limiter } = countingLimiter(redis, 3000, unique('window'))
    const shared = new SharedConsume(limiter, redis, one)
    // 'renewed' goes idle first, so its places are on their way back before those of 'same'.
    await drive([shared], 'renewed', 30, 20, 5)
    expect(Number(await redis.get(`${prefix}:renewed`))).toBeGreaterThan(600)
    // As if 'renewed' had expired and a new window had started with other replicas' 7 requests.
    await redis.set(`${prefix}:renewed`, 7, 'EX', 3600)
    await drive([shared], 'same', 30, 20, 5)

    await waitFor(async () => Number(await redis.get(`${prefix}:same`)) === 600, { what: "the idle lease of 'same' given back" })
    expect(Number(await redis.get(`${prefix}:renewed`))).toBe(7)
  })

  it('passes Redis errors to every request of the batch and starts afresh after', async () => {
    const offline = new Redis('redis://127.0.0.1:1', { enableOfflineQueue: false, lazyConnect: true, maxRetriesPerRequest: 0 })
    const shared = new SharedConsume(new RateLimiterRedis({ storeClient: offline, points: 5, duration: 60, rejectIfRedisNotReady: true }), offline, one)
    const { admitted, refused } = settled(await Promise.allSettled([1, 2, 3].map(() => shared.take('k'))))
    expect(admitted).toHaveLength(0)
    expect(refused).toHaveLength(3)
    expect(refused.every((r) => r instanceof Error)).toBe(true)
    await expect(shared.take('k')).rejects.toBeInstanceOf(Error)
    offline.disconnect()
  })
})
