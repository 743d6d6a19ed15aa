import type { Redis } from 'ioredis'
import { RateLimiterRes, type RateLimiterRedis } from 'rate-limiter-flexible'

/** A lease holds about this much of a key's traffic. */
const LEASE_MS = 100
/** Only a key this busy on a replica (requests per ms) takes leases: a slower one does not need them to keep up. */
const MIN_RATE = 1
/**
 * The end of a limit is counted request by request, leases never reach into it: the last tenth, or what the fleet
 * uses in RESERVE_MS if more. A lease is used up (or given back) sooner than that, so under steady traffic no place is
 * still leased when the limit runs out.
 */
const RESERVE_SHARE = 0.1
const RESERVE_MS = 3 * LEASE_MS
/** Places of a lease unused for this long go back to the fleet's count. */
const IDLE_MS = 2 * LEASE_MS
/** Rates are measured over periods at least this long (a key's requests piled up behind one round trip are no rate). */
const RATE_PERIOD_MS = LEASE_MS / 2

/**
 * Returns unused places to a window's count, but only to the window they were taken from: one created since has a
 * longer time to live than what was left of the old one (ARGV[2]), and must not start below zero. Increments past the
 * limit (ARGV[3]) were all refused, so they go too: the places given back are then free for the next requests.
 */
const GIVE_BACK_SCRIPT = `local ttl = redis.call('pttl', KEYS[1])
if ttl <= 0 or ttl > tonumber(ARGV[2]) then return false end
local count = tonumber(redis.call('get', KEYS[1]))
return redis.call('decrby', KEYS[1], count - math.min(count, tonumber(ARGV[3])) + tonumber(ARGV[1]))`

// Redis's answers to an increment of a value that is not a count.
const JUNK_REPLY = /^(ERR value is not an integer|WRONGTYPE)/

interface Waiter {
  readonly resolve: (res: RateLimiterRes) => void
  readonly reject: (reason: unknown) => void
}

interface KeyState {
  /** Requests for the next increment. */
  waiting: Waiter[]
  /** Places this replica holds in the count for the key's next requests: `next` to `last`. */
  next: number
  last: number
  leaseInFlight: boolean
  /** When the key's window ends, by `performance.now()`, as last answered. */
  windowEnds: number
  /** The fleet's count at the last answer; undefined before the first. */
  counted: number | undefined
  /** This replica's requests for the key per ms over the last rate period, and the period under way. */
  rate: number | undefined
  periodStart: number
  periodDemand: number
  /** The fleet's count per ms over the last rate period, and where the period under way started. */
  fleetRate: number | undefined
  fleetPeriodStart: number
  fleetPeriodCount: number | undefined
  seenAt: number
}

/**
 * A fleet-wide counter per key, with Redis off the path of a busy key's requests and the count still exact:
 * - Requests for one key that arrive in the same turn of the event loop go to Redis as one `consume(key, n)`. Each
 *   keeps its own place (the k-th of a batch that brought the count to `total` is number `total - n + k`; Redis applies
 *   increments one at a time, so batches in flight together cannot mix up their places).
 * - A busy key's increment (MIN_RATE or more) also takes a lease: spare places for about the next LEASE_MS of the
 *   key's traffic on this replica, which then pass without waiting for Redis. A lease is at most half of what is left
 *   above the limit's reserved end (see RESERVE_SHARE), divided by the live replicas. Places unused for IDLE_MS go
 *   back.
 * Leased places are in Redis's count from the start, so the fleet never admits more than the limit; and since unused
 * ones return, a limit that runs out under steady traffic has admitted exactly `limit` requests.
 */
export class SharedConsume {
  readonly #limiter: RateLimiterRedis
  readonly #redis: Redis
  readonly #replicas: () => number
  readonly #onJunk: (redisKey: string) => void
  readonly #keys = new Map<string, KeyState>()
  #pending = new Map<string, KeyState>()
  #sweeper: NodeJS.Timeout | undefined

  /** `onJunk` hears of a count that was not a number (then removed: the key's next request starts a new window). */
  constructor(limiter: RateLimiterRedis, redis: Redis, replicas: () => number, onJunk: (redisKey: string) => void = () => undefined) {
    this.#limiter = limiter
    this.#redis = redis
    this.#replicas = replicas
    this.#onJunk = onJunk
  }

  /**
   * This request's own result: at once when it has a leased place, otherwise a promise of it, rejected with the result
   * (a RateLimiterRes) over the limit, or with Redis's error.
   */
  take(key: string): RateLimiterRes | Promise<RateLimiterRes> {
    const now = performance.now()
    const state = this.#keys.get(key) ?? this.#track(key, now)
    state.seenAt = now
    state.periodDemand++
    if (now - state.periodStart >= RATE_PERIOD_MS) {
      state.rate = state.periodDemand / (now - state.periodStart)
      state.periodStart = now
      state.periodDemand = 0
    }
    const leased = this.#fromLease(state, now)
    if (leased) return leased
    return new Promise((resolve, reject) => {
      state.waiting.push({ resolve, reject })
      if (this.#pending.size === 0) setImmediate(this.#sendAll)
      this.#pending.set(key, state)
    })
  }

  /**
   * Returns a place this request took but will not use (another window of its limit refused it): only to the window
   * it came from, which `taken` (its answer) dates.
   */
  giveBack(key: string, taken: RateLimiterRes): void {
    // A failed give-back leaves the place counted: the limit errs on the strict side, never over.
    this.#redis.eval(GIVE_BACK_SCRIPT, 1, this.#limiter.getKey(key), 1, Math.ceil(taken.msBeforeNext) + 1, this.#limiter.points).catch(() => {})
  }

  #fromLease(state: KeyState, now: number): RateLimiterRes | undefined {
    if (state.next > state.last || now >= state.windowEnds) return undefined
    const place = state.next++
    return new RateLimiterRes(this.#limiter.points - place, Math.round(state.windowEnds - now), place, false)
  }

  #track(key: string, now: number): KeyState {
    const state: KeyState = {
      waiting: [],
      next: 1,
      last: 0,
      leaseInFlight: false,
      windowEnds: 0,
      counted: undefined,
      rate: undefined,
      periodStart: now,
      periodDemand: 0,
      fleetRate: undefined,
      fleetPeriodStart: now,
      fleetPeriodCount: undefined,
      seenAt: now,
    }
    this.#keys.set(key, state)
    this.#sweeper ??= setInterval(this.#sweep, LEASE_MS).unref()
    return state
  }

  readonly #sendAll = (): void => {
    const pending = this.#pending
    this.#pending = new Map()
    for (const [key, state] of pending) this.#send(key, state)
  }

  #send(key: string, state: KeyState): void {
    // A lease that came back since these requests started waiting serves them first.
    const now = performance.now()
    let served = 0
    for (let leased: RateLimiterRes | undefined; served < state.waiting.length && (leased = this.#fromLease(state, now)); served++) state.waiting[served]?.resolve(leased)
    const batch = served === 0 ? state.waiting : state.waiting.slice(served)
    state.waiting = []
    if (batch.length === 0) return
    // Here the lease is used up (or from a window gone by), so a new one may come.
    const lease = this.#leaseSize(state, batch.length)
    if (lease > 0) state.leaseInFlight = true
    const limit = this.#limiter.points
    const answer = (counted: RateLimiterRes) => {
      const first = counted.consumedPoints - batch.length - lease + 1
      batch.forEach((waiter, index) => {
        const place = first + index
        const own = new RateLimiterRes(Math.max(0, limit - place), counted.msBeforeNext, place, counted.isFirstInDuration && index === 0)
        if (place <= limit) waiter.resolve(own)
        else waiter.reject(own)
      })
      const at = performance.now()
      this.#measureFleet(state, counted.consumedPoints, at)
      state.counted = counted.consumedPoints
      state.windowEnds = at + counted.msBeforeNext
      if (lease > 0) {
        state.leaseInFlight = false
        state.next = first + batch.length
        state.last = Math.min(limit, counted.consumedPoints)
      }
    }
    this.#limiter.consume(key, batch.length + lease).then(answer, (error: unknown) => {
      if (error instanceof RateLimiterRes) return answer(error)
      if (lease > 0) state.leaseInFlight = false
      // Something not a count at the key (no TTL: it would fail every request of the key for good). It goes; these
      // requests take the route's Redis-down way, the next ones count anew.
      if (error instanceof Error && JUNK_REPLY.test(error.message)) {
        const redisKey = this.#limiter.getKey(key)
        this.#redis.del(redisKey).catch(() => undefined)
        this.#onJunk(redisKey)
      }
      for (const waiter of batch) waiter.reject(error)
    })
  }

  #measureFleet(state: KeyState, count: number, at: number): void {
    // A count below the period's start is a new window (or places given back): the period starts over.
    if (state.fleetPeriodCount === undefined || count < state.fleetPeriodCount) {
      state.fleetPeriodCount = count
      state.fleetPeriodStart = at
    } else if (at - state.fleetPeriodStart >= RATE_PERIOD_MS) {
      state.fleetRate = (count - state.fleetPeriodCount) / (at - state.fleetPeriodStart)
      state.fleetPeriodCount = count
      state.fleetPeriodStart = at
    }
  }

  /** Spare places to take along: the key's rate times LEASE_MS, within its fair part of what is left. */
  #leaseSize(state: KeyState, batchSize: number): number {
    const { rate, fleetRate, counted } = state
    if (state.leaseInFlight || rate === undefined || rate < MIN_RATE || fleetRate === undefined || counted === undefined) return 0
    const limit = this.#limiter.points
    const reserve = Math.ceil(Math.max(limit * RESERVE_SHARE, fleetRate * RESERVE_MS))
    const leasable = limit - counted - batchSize - reserve
    return Math.max(0, Math.min(Math.ceil(rate * LEASE_MS), Math.floor(leasable / (2 * Math.max(1, this.#replicas())))))
  }

  /** Forgets keys idle for IDLE_MS, and gives their unused places back while their window lasts. */
  readonly #sweep = (): void => {
    const now = performance.now()
    for (const [key, state] of this.#keys) {
      if (now - state.seenAt < IDLE_MS || state.leaseInFlight || state.waiting.length > 0) continue
      this.#keys.delete(key)
      const unused = state.last - state.next + 1
      if (unused > 0 && now < state.windowEnds) {
        // A failed give-back leaves the places counted: the limit errs on the strict side, never over.
        this.#redis.eval(GIVE_BACK_SCRIPT, 1, this.#limiter.getKey(key), unused, Math.ceil(state.windowEnds - now), this.#limiter.points).catch(() => {})
      }
    }
    if (this.#keys.size === 0) {
      clearInterval(this.#sweeper)
      this.#sweeper = undefined
    }
  }
}
