import { RateLimiterRes, type RateLimiterRedis } from 'rate-limiter-flexible'

interface Waiter {
  readonly resolve: (res: RateLimiterRes) => void
  readonly reject: (reason: unknown) => void
}

/**
 * Concurrent requests for one key share their Redis round trips. While a consume of a key is in flight, the requests
 * that arrive for it wait and then go together as one `consume(key, n)`. Each keeps its own place in the count (the
 * k-th of a batch that brought the counter to `total` is number `total - n + k`), so a limit admits exactly the
 * requests that one round trip each would have admitted, and a busy key costs Redis one command per round trip
 * instead of one per request.
 */
export class BatchedConsume {
  readonly #limiter: RateLimiterRedis
  /** Keys with a consume in flight, each with the requests waiting for the next batch. */
  readonly #waiting = new Map<string, Waiter[]>()

  constructor(limiter: RateLimiterRedis) {
    this.#limiter = limiter
  }

  /** Resolves with this request's own result, or rejects with it (a RateLimiterRes) over the limit, or with Redis's error. */
  consume(key: string): Promise<RateLimiterRes> {
    return new Promise((resolve, reject) => {
      const waiting = this.#waiting.get(key)
      if (waiting) {
        waiting.push({ resolve, reject })
        return
      }
      this.#waiting.set(key, [])
      this.#send(key, [{ resolve, reject }])
    })
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
      this.#next(key)
    }
    this.#limiter.consume(key, batch.length).then(answer, (error: unknown) => {
      if (error instanceof RateLimiterRes) return answer(error)
      for (const waiter of batch) waiter.reject(error)
      this.#next(key)
    })
  }

  #next(key: string): void {
    const waiting = this.#waiting.get(key) ?? []
    if (waiting.length === 0) {
      this.#waiting.delete(key)
      return
    }
    this.#waiting.set(key, [])
    this.#send(key, waiting)
  }
}
