import type { FastifyBaseLogger } from 'fastify'
import type { RouteDefinition } from '../routes/parse.js'
import type { SharedState } from '../state/shared-state.js'
import { createRouteBreaker, type RouteBreaker } from './circuit-breaker/circuit-breaker.js'
import { OutlierDetector } from './outlier-detection/outlier-detection.js'
import { createRateLimit, type RequestPolicy } from './rate-limit/rate-limit.js'
import { RetryBudget } from './retry/retry-budget.js'

/** The stateful policies of one route, built from its definition. */
export interface RoutePolicies {
  readonly limitRate: RequestPolicy | undefined
  readonly breaker: RouteBreaker | undefined
  readonly retryBudget: RetryBudget | undefined
  readonly outliers: OutlierDetector | undefined
}

/**
 * Keeps each route's policies across table swaps: a reload that leaves a route's policy config as it was keeps its
 * breaker state, local counters and ejections; a changed config starts afresh; a removed route's breaker is stopped.
 */
export class PolicyRegistry {
  readonly #state: SharedState | undefined
  readonly #logger: FastifyBaseLogger
  #live = new Map<string, { readonly fingerprint: string; readonly policies: RoutePolicies }>()

  constructor(state: SharedState | undefined, logger: FastifyBaseLogger) {
    this.#state = state
    this.#logger = logger
  }

  /** Policies for every route of a new table; those of routes no longer in it are stopped. */
  build(definitions: readonly RouteDefinition[]): Map<string, RoutePolicies> {
    const next = new Map<string, { fingerprint: string; policies: RoutePolicies }>()
    for (const definition of definitions) {
      const fingerprint = JSON.stringify([definition.rateLimit, definition.circuitBreaker, [...(definition.circuitBreaker?.failureStatuses ?? [])], definition.retry && { ...definition.retry, onStatuses: [...definition.retry.onStatuses], methods: [...definition.retry.methods] }, definition.outlierDetection])
      const kept = this.#live.get(definition.name)
      next.set(definition.name, kept?.fingerprint === fingerprint ? kept : { fingerprint, policies: this.#create(definition) })
    }
    for (const [name, entry] of this.#live) if (next.get(name) !== entry) entry.policies.breaker?.stop()
    this.#live = next
    return new Map([...next].map(([name, entry]) => [name, entry.policies]))
  }

  stop(): void {
    for (const entry of this.#live.values()) entry.policies.breaker?.stop()
    this.#live.clear()
  }

  #create(definition: RouteDefinition): RoutePolicies {
    return {
      limitRate: definition.rateLimit && createRateLimit(definition.name, definition.rateLimit, this.#state),
      breaker: definition.circuitBreaker && createRouteBreaker(definition.name, definition.circuitBreaker, this.#state, this.#logger),
      retryBudget: definition.retry && new RetryBudget(definition.retry.budgetPercent),
      outliers: definition.outlierDetection && new OutlierDetector(definition.outlierDetection),
    }
  }
}
