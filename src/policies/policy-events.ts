/** The decisions policies count, each by route and outcome. */
export type PolicyEventKind = 'rate_limit' | 'retry' | 'ejection' | 'breaker_transition' | 'cache' | 'cache_stale' | 'cache_wait' | 'cache_eviction'

/**
 * What the policies decided, counted by kind, route and outcome: plain numbers on the request path (nested maps, no
 * label hashing, no allocation once a series exists), turned into Prometheus samples when it scrapes.
 */
export class PolicyEvents {
  readonly #counts = new Map<PolicyEventKind, Map<string, Map<string, number>>>()

  count(kind: PolicyEventKind, route: string, outcome: string): void {
    let routes = this.#counts.get(kind)
    if (!routes) this.#counts.set(kind, (routes = new Map()))
    let outcomes = routes.get(route)
    if (!outcomes) routes.set(route, (outcomes = new Map()))
    outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1)
  }

  *of(kind: PolicyEventKind): Iterable<{ route: string; outcome: string; count: number }> {
    for (const [route, outcomes] of this.#counts.get(kind) ?? []) for (const [outcome, count] of outcomes) yield { route, outcome, count }
  }
}
