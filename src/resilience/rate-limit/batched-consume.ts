import { RateLimiterRes, type RateLimiterRedis } from 'rate-limiter-flexible'

interface Waiter {
  readonly resolve: (res: RateLimiterRes) => void
  readonly reject: (reason: unknown) => void
}

/**
 * Requests for one key that arrive in the same turn of the event loop share one Redis round trip: they go together
 * as one `consume(key, n)` once the turn's I/O has been handled. Each keeps its own place in the count (the k-th of a
 * batch that brought the counter to `total` is number `total - n + k`; Redis applies increments one at a time, so
 * batches in flight together cannot mix up their places). A limit thus admits exactly the requests that one round
 * trip each would have admitted, and a busy key costs Redis one command per loop turn instead of one per request.
 */
export class BatchedConsume {
  readonly #limiter: RateLimiterRedis
  #waiting = new Map<string, Waiter[]>()

  constructor(limiter: RateLimiterRedis) {
    this.#limiter = limiter
  }

  /** Resolves with this request's own result, or rejects with it (a RateLimiterRes) over the limit, or with Redis's error. */
  consume(key: string): Promise<RateLimiterRes> {
    return new Promise((resolve, reject) => {
      const waiting = this.#waiting.get(key)
      if (waiting) return void waiting.push({ resolve, reject })
      if (this.#waiting.size === 0) setImmediate(this.#sendAll)
      this.#waiting.set(key, [{ resolve, reject }])
    })
  }

  readonly #sendAll = (): void => {
    const batches = this.#waiting
    this.#waiting = new Map()
    for (const [key, batch] of batches) this.#send(key, batch)
  }

  #send(key: string, batch: readonly Waiter[]): void {
    const answer = (counted: RateLimiterRes) => {
      const limit = this.#limiter.points
      const first = counted.consumedPoints - batch.length + 1
      batch.forEach((waiter, index) => {
        const place = first + index
        const own = new RateLimiterRes(Math.max(0, limit - place), counted.msBeforeNext, place, counted.isFirstInDuration && index === 0)
        if (place <= limit) waiter.resolve(own)
        else waiter.reject(own)
      })
    }
    this.#limiter.consume(key, batch.length).then(answer, (error: unknown) => {
      if (error instanceof RateLimiterRes) return answer(error)
      for (const waiter of batch) waiter.reject(error)
    })
  }
}
