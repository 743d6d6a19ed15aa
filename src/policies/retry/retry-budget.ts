/**
 * At most `percent` of a route's recent requests may be retries (Envoy's and Finagle's retry budget), plus a few so a
 * quiet route can still retry. Counted over the current and previous window of `windowMs`.
 */
export class RetryBudget {
  readonly #percent: number
  readonly #windowMs: number
  readonly #minimum: number
  readonly #now: () => number
  #windowStart = 0
  #requests = [0, 0]
  #retries = [0, 0]

  constructor(percent: number, { windowMs = 10_000, minimum = 3, now = Date.now }: { windowMs?: number; minimum?: number; now?: () => number } = {}) {
    this.#percent = percent
    this.#windowMs = windowMs
    this.#minimum = minimum
    this.#now = now
  }

  recordRequest(): void {
    this.#roll()
    this.#requests[0]!++
  }

  /** Takes one retry from the budget if there is one left. */
  tryRetry(): boolean {
    this.#roll()
    const requests = this.#requests[0]! + this.#requests[1]!
    const retries = this.#retries[0]! + this.#retries[1]!
    if (retries >= this.#minimum + (requests * this.#percent) / 100) return false
    this.#retries[0]!++
    return true
  }

  #roll(): void {
    const now = this.#now()
    if (now - this.#windowStart < this.#windowMs) return
    const elapsedWindows = Math.floor((now - this.#windowStart) / this.#windowMs)
    this.#requests = elapsedWindows === 1 ? [0, this.#requests[0]!] : [0, 0]
    this.#retries = elapsedWindows === 1 ? [0, this.#retries[0]!] : [0, 0]
    this.#windowStart = now - ((now - this.#windowStart) % this.#windowMs)
  }
}
