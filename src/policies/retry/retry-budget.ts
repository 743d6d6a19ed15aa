import { FleetCounters } from '../../state/fleet-counters.js'
import type { SharedState } from '../../state/shared-state.js'

export interface RetryBudgetOptions {
  readonly windowMs?: number
  /** Retries allowed on top of the share, so a quiet route can still retry. */
  readonly minimum?: number
  readonly now?: () => number
  /** With Redis, requests and retries are the fleet's: N replicas together stay within one budget. */
  readonly state?: SharedState | undefined
  /** Names the route's counters in Redis. */
  readonly route?: string
}

/**
 * At most `percent` of a route's recent requests may be retries (Envoy's and Finagle's retry budget), plus a few so a
 * quiet route can still retry. Counted over a rolling window, across the fleet when the gateway has Redis (through
 * the same FleetCounters the breakers use), by this replica alone otherwise.
 */
export class RetryBudget {
  readonly #percent: number
  readonly #minimum: number
  readonly #counts: FleetCounters

  constructor(percent: number, { windowMs = 10_000, minimum = 3, now, state, route = '' }: RetryBudgetOptions = {}) {
    this.#percent = percent
    this.#minimum = minimum
    this.#counts = new FleetCounters({ state, key: `portico:rb:{${route}}:counts`, fields: ['requests', 'retries'], windowMs, buckets: 10, now })
  }

  recordRequest(): void {
    this.#counts.add('requests')
  }

  /** Takes one retry from the budget if there is one left. */
  tryRetry(): boolean {
    if (this.#counts.sum('retries') >= this.#minimum + (this.#counts.sum('requests') * this.#percent) / 100) return false
    this.#counts.add('retries')
    return true
  }

  stop(): void {
    this.#counts.stop()
  }
}
