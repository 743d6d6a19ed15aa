import type { Redis } from 'ioredis'

/** How long a slot outlives its last renewal: a replica that dies gives its slots back within this. */
export const SLOT_LEASE_MS = 5_000
const RENEW_EVERY_MS = SLOT_LEASE_MS / 4

// Redis's clock, not the replicas': every replica's slots expire on the same time line.
const NOW = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`
/** Takes a slot if fewer than ARGV[1] unexpired ones are held: 1, or 0 when the route is at its limit. */
const TAKE = `${NOW}redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1`
/** Extends the leases of the slots this replica still holds (ARGV[2..]); a slot already expired stays gone. */
const RENEW = `${NOW}for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1`

/**
 * A route's concurrency slots for the whole fleet: a sorted set of leases in Redis (member: replica and sequence,
 * score: expiry by Redis's clock). Taking is one script (expire, count, add); giving back one ZREM. A replica renews
 * the leases it holds while it lives, so a long request keeps its slot and a crashed replica's slots come back by
 * themselves.
 */
export class SharedSlots {
  readonly #redis: Redis
  readonly #key: string
  readonly #limit: number
  readonly #owner: string
  readonly #held = new Set<string>()
  #sequence = 0
  #renewer: NodeJS.Timeout | undefined

  constructor(redis: Redis, route: string, limit: number, replicaId: string) {
    this.#redis = redis
    // `{route}` is a hash tag: with Redis Cluster every key of a route lands in one slot.
    this.#key = `portico:cc:{${route}}:slots`
    this.#limit = limit
    this.#owner = replicaId
  }

  get held(): number {
    return this.#held.size
  }

  /** A slot's id, or undefined at the limit; rejects when Redis does not answer. */
  async take(): Promise<string | undefined> {
    const slot = `${this.#owner}:${++this.#sequence}`
    const taken = await this.#redis.eval(TAKE, 1, this.#key, this.#limit, SLOT_LEASE_MS, slot)
    if (taken !== 1) return undefined
    this.#held.add(slot)
    this.#renewer ??= setInterval(this.#renew, RENEW_EVERY_MS).unref()
    return slot
  }

  /** Gives a slot back; a failed ZREM leaves it to expire with its lease (no longer renewed). */
  release(slot: string): void {
    if (!this.#held.delete(slot)) return
    this.#redis.zrem(this.#key, slot).catch(() => undefined)
  }

  stop(): void {
    clearInterval(this.#renewer)
    this.#renewer = undefined
  }

  readonly #renew = (): void => {
    if (this.#held.size === 0) return this.stop()
    this.#redis.eval(RENEW, 1, this.#key, SLOT_LEASE_MS, ...this.#held).catch(() => undefined)
  }
}
