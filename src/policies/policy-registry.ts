import { fingerprint, type AnyPolicyKind, type PolicyDeps, type PolicyRoute, type RoutePolicy } from './policy.js'

/** A route as the registry needs it: its identity, and its policies' configs by key (in POLICIES order). */
export interface RouteWithPolicies extends PolicyRoute {
  readonly policies: ReadonlyMap<string, unknown>
}

/** One policy of one route, under its route-file key. */
export interface KeyedPolicy {
  readonly key: string
  readonly policy: RoutePolicy
}

interface LivePolicy {
  readonly fingerprint: string
  readonly policy: RoutePolicy
}

/**
 * Keeps each route's policies across table swaps, policy by policy: a reload that leaves a policy's config as it
 * was keeps its state (breaker state, local counters, ejections); a changed config starts afresh; a policy no longer
 * used is stopped. Requests under way keep the policies they started with (a stopped breaker lets them finish).
 */
export class PolicyRegistry {
  readonly #kinds: readonly AnyPolicyKind[]
  readonly #deps: PolicyDeps
  #live = new Map<string, LivePolicy>()

  constructor(kinds: readonly AnyPolicyKind[], deps: PolicyDeps) {
    this.#kinds = kinds
    this.#deps = deps
  }

  /** The live policies of every route of a new table, in POLICIES order; those no longer used are stopped. */
  build(routes: readonly RouteWithPolicies[]): Map<string, readonly KeyedPolicy[]> {
    const next = new Map<string, LivePolicy>()
    const byRoute = new Map<string, readonly KeyedPolicy[]>()
    for (const route of routes) {
      const policies: KeyedPolicy[] = []
      for (const kind of this.#kinds) {
        if (!route.policies.has(kind.key)) continue
        const config = route.policies.get(kind.key)
        const id = `${route.name}\u0000${kind.key}`
        const print = fingerprint([config, route.timeout])
        const kept = this.#live.get(id)
        const entry = kept?.fingerprint === print ? kept : { fingerprint: print, policy: kind.create(route, config, this.#deps) }
        next.set(id, entry)
        policies.push({ key: kind.key, policy: entry.policy })
      }
      byRoute.set(route.name, policies)
    }
    for (const [id, entry] of this.#live) if (next.get(id) !== entry) entry.policy.stop?.()
    this.#live = next
    return byRoute
  }

  stop(): void {
    for (const entry of this.#live.values()) entry.policy.stop?.()
    this.#live.clear()
  }
}
