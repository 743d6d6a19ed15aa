import { Redis } from 'ioredis'
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { BatchedConsume } from '../../src/resilience/rate-limit/batched-consume.js'

/** A limiter that records the points of every consume it sends to Redis. */
function countingLimiter(redis: Redis, points: number, keyPrefix: string): { limiter: RateLimiterRedis; sent: number[] } {
  const sent: number[] = []
  const limiter = new RateLimiterRedis({ storeClient: redis, points, duration: 60, keyPrefix, rejectIfRedisNotReady: true })
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

describe('BatchedConsume (real Redis)', () => {
  let redis: Redis
  beforeAll(async () => {
    redis = new Redis(inject('redisUrl'))
    await redis.ping()
  })
  afterAll(() => redis?.disconnect())

  it('sends the requests of one loop turn as one consume per key, and admits exactly the limit', async () => {
    const prefix = `batch-${process.pid}-${Date.now()}`
    const { limiter, sent } = countingLimiter(redis, 10, prefix)
    const batched = new BatchedConsume(limiter)
    const { admitted, refused } = settled(await Promise.allSettled(Array.from({ length: 40 }, () => batched.consume('k'))))

    expect(sent).toEqual([40])
    expect(admitted.map((r) => r.consumedPoints)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    expect(admitted.map((r) => r.remainingPoints)).toEqual([9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    expect(refused).toHaveLength(30)
    expect(refused.every((r) => r instanceof RateLimiterRes && r.remainingPoints === 0 && r.msBeforeNext > 0)).toBe(true)
    expect(Number(await redis.get(`${prefix}:k`))).toBe(40)
  })

  it('keeps keys apart, and places the requests of batches in flight together right', async () => {
    const prefix = `batch-keys-${process.pid}-${Date.now()}`
    const { limiter, sent } = countingLimiter(redis, 3, prefix)
    const batched = new BatchedConsume(limiter)
    const first = ['a', 'b', 'a', 'b', 'a'].map((key) => batched.consume(key))
    // A second turn's batch goes out before the first one's answer is back.
    await new Promise((resolve) => setImmediate(resolve))
    const second = ['a', 'b'].map((key) => batched.consume(key))
    const results = await Promise.allSettled([...first, ...second])

    expect(sent).toEqual([3, 2, 1, 1])
    expect(results.map((r) => (r.status === 'fulfilled' ? r.value.consumedPoints : `over:${(r.reason as RateLimiterRes).consumedPoints}`))).toEqual([1, 1, 2, 2, 3, 'over:4', 3])
  })

  it('passes Redis errors to every request of the batch and starts afresh after', async () => {
    const offline = new Redis('redis://127.0.0.1:1', { enableOfflineQueue: false, lazyConnect: true, maxRetriesPerRequest: 0 })
    const batched = new BatchedConsume(new RateLimiterRedis({ storeClient: offline, points: 5, duration: 60, rejectIfRedisNotReady: true }))
    const { admitted, refused } = settled(await Promise.allSettled([1, 2, 3].map(() => batched.consume('k'))))
    expect(admitted).toHaveLength(0)
    expect(refused).toHaveLength(3)
    expect(refused.every((r) => r instanceof Error)).toBe(true)
    await expect(batched.consume('k')).rejects.toBeInstanceOf(Error)
    offline.disconnect()
  })
})
