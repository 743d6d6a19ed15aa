import type { ChainableCommander } from 'ioredis'
import type { SharedState } from './shared-state.js'

export interface FleetCountersOptions {
  readonly state: SharedState | undefined
  /** Key prefix of the time buckets, e.g. `portico:cb:{route}:counts` (a hash tag keeps a route in one slot). */
  readonly key: string
  readonly fields: readonly string[]
  /** The rolling window the sums cover. */
  readonly windowMs: number
  readonly buckets?: number
  /** More commands for the same round trip (e.g. a breaker's state key), and what to do with their answers. */
  readonly alongside?: {
    add(multi: ChainableCommander): void
    read(results: readonly unknown[]): void | Promise<void>
  }
  readonly now?: () => number
}

/**
 * Counters over a rolling window that every replica adds to and reads the fleet's sums from: time-bucketed Redis
 * hashes, written and read off the request path (one MULTI per ≤200 ms, only while there is anything to say or
 * read). The request path only adds to local numbers. Without Redis (or while it is away) the sums are this replica's
 * own, over the same window. Used by the circuit breakers (successes, failures) and the retry budgets (requests,
 * retries).
 */
export class FleetCounters {
  readonly #options: FleetCountersOptions
  readonly #bucketMs: number
  readonly #buckets: number
  readonly #now: () => number
  /** This replica's counts per bucket start, for the local sums. */
  readonly #local = new Map<number, number[]>()
  /** Counts not yet added to Redis, and those on their way there (not in the fleet's sums until the flush answers). */
  #pending: number[]
  #sending: number[]
  /** The fleet's sums at the last flush; undefined until one succeeded (or while Redis is away). */
  #fleet: number[] | undefined
  #timer: NodeJS.Timeout | undefined

  constructor(options: FleetCountersOptions) {
    this.#options = options
    this.#buckets = options.buckets ?? 10
    this.#bucketMs = Math.max(100, Math.floor(options.windowMs / this.#buckets))
    this.#now = options.now ?? Date.now
    this.#pending = options.fields.map(() => 0)
    this.#sending = options.fields.map(() => 0)
    if (options.state) {
      this.#timer = setInterval(() => void this.flush(), Math.min(200, this.#bucketMs))
      this.#timer.unref()
    }
  }

  add(field: string, n = 1): void {
    const index = this.#options.fields.indexOf(field)
    this.#pending[index]! += n
    const start = this.#bucketStart(this.#now())
    let counts = this.#local.get(start)
    // The first count after a quiet spell: read the fleet's sums now rather than at the next tick.
    if (this.#local.size === 0 && this.#timer) setImmediate(() => void this.flush())
    if (!counts) {
      counts = this.#options.fields.map(() => 0)
      this.#local.set(start, counts)
    }
    counts[index]! += n
  }

  /** Forgets buckets that left the window. */
  #age(): void {
    const oldest = this.#bucketStart(this.#now()) - (this.#buckets - 1) * this.#bucketMs
    for (const start of this.#local.keys()) if (start < oldest) this.#local.delete(start)
  }

  /** The fleet's count of `field` over the window (as last read, plus this replica's since); this replica's alone without Redis. */
  sum(field: string): number {
    const index = this.#options.fields.indexOf(field)
    if (this.#fleet && this.#options.state?.isUp()) return this.#fleet[index]! + this.#sending[index]! + this.#pending[index]!
    const oldest = this.#bucketStart(this.#now()) - (this.#buckets - 1) * this.#bucketMs
    let total = 0
    for (const [start, counts] of this.#local) if (start >= oldest) total += counts[index]!
    return total
  }

  /** The keys of the window's buckets (and the one before), e.g. to clear them. */
  windowKeys(): string[] {
    const current = this.#bucketStart(this.#now())
    return Array.from({ length: this.#buckets + 1 }, (_, i) => `${this.#options.key}:${current - i * this.#bucketMs}`)
  }

  /** Adds this replica's counts to the fleet's and reads the fleet's sums back, in one round trip. */
  async flush(): Promise<void> {
    const { state, fields, alongside } = this.#options
    if (!state?.isUp()) {
      this.#fleet = undefined
      return
    }
    this.#age()
    const counts = this.#pending
    // Nothing to add and nobody here to read the sums (no traffic in the window): no round trip, and no sums kept
    // that would be stale when traffic comes back (its first add reads them afresh).
    if (!alongside && this.#local.size === 0) {
      this.#fleet = undefined
      return
    }
    this.#pending = fields.map(() => 0)
    this.#sending = this.#sending.map((n, i) => n + counts[i]!)
    const current = this.#bucketStart(this.#now())
    const bucket = `${this.#options.key}:${current}`
    let extra: unknown[]
    try {
      const multi = state.redis.multi()
      if (counts.some((n) => n > 0)) {
        fields.forEach((field, i) => {
          if (counts[i]! > 0) multi.hincrby(bucket, field, counts[i]!)
        })
        multi.pexpire(bucket, this.#options.windowMs * 2)
      }
      const window = this.windowKeys().slice(0, this.#buckets)
      for (const key of window) multi.hmget(key, ...fields)
      alongside?.add(multi)
      const results = (await multi.exec()) ?? []
      // [increments, pexpire] when there were counts, then one HMGET per bucket, then the alongside commands.
      const first = counts.some((n) => n > 0) ? counts.filter((n) => n > 0).length + 1 : 0
      const sums = fields.map(() => 0)
      for (const [, value] of results.slice(first, first + window.length)) {
        // Whatever a bucket holds, junk counts as nothing.
        if (Array.isArray(value)) value.forEach((v: unknown, i) => (sums[i]! += Number(v ?? 0) || 0))
      }
      this.#fleet = sums
      extra = results.slice(first + window.length).map(([error, value]) => (error ? undefined : value))
    } catch {
      // Lost while Redis is away: the sums fall back to this replica's own until a flush succeeds again.
      this.#fleet = undefined
      return
    } finally {
      this.#sending = this.#sending.map((n, i) => n - counts[i]!)
    }
    await alongside?.read(extra)
  }

  stop(): void {
    clearInterval(this.#timer)
  }

  #bucketStart(now: number): number {
    return Math.floor(now / this.#bucketMs) * this.#bucketMs
  }
}
