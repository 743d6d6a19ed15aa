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

/** A table's policies, built but not yet live: the table that uses them commits them once it is swapped in. */
export interface PolicyBuild {
  /** Each route's policies, in POLICIES order. */
  readonly byRoute: ReadonlyMap<string, readonly KeyedPolicy[]>
  /** The table went live: the policies it no longer uses are stopped. */
  commit(): void
  /** The table will not go live: the policies made for it alone are stopped; the live ones run on untouched. */
  abandon(): void
}

/**
 * Keeps each route's policies across table swaps, policy by policy: a reload that leaves a policy's config as it
 * was keeps its state (breaker state, local counters, ejections); a changed config starts afresh; a policy no longer
 * used is stopped once the table without it is live. Requests under way keep the policies they started with (a
 * stopped breaker lets them finish).
 */
export class PolicyRegistry {
  readonly #kinds: readonly AnyPolicyKind[]
  readonly #deps: PolicyDeps
  #live = new Map<string, LivePolicy>()

  constructor(kinds: readonly AnyPolicyKind[], deps: PolicyDeps) {
    this.#kinds = kinds
    this.#deps = deps
  }

  /**
   * The policies of every route of a new table: the live ones where the config is unchanged, new ones elsewhere.
   * Nothing live changes until `commit`; a policy whose `create` throws abandons the build and throws.
   */
  build(routes: readonly RouteWithPolicies[]): PolicyBuild {
    const next = new Map<string, LivePolicy>()
    const made: RoutePolicy[] = []
    const byRoute = new Map<string, readonly KeyedPolicy[]>()
    const abandon = (): void => {
      for (const policy of made.splice(0)) policy.stop?.()
    }
    try {
      for (const route of routes) {
        const policies: KeyedPolicy[] = []
        for (const kind of this.#kinds) {
          if (!route.policies.has(kind.key)) continue
          const config = route.policies.get(kind.key)
          const id = `${route.name}\u0000${kind.key}`
          const print = fingerprint([config, route.timeout, route.methods])
          const kept = this.#live.get(id)
          const entry = kept?.fingerprint === print ? kept : { fingerprint: print, policy: kind.create(route, config, this.#deps) }
          if (entry !== kept) made.push(entry.policy)
          next.set(id, entry)
          policies.push({ key: kind.key, policy: entry.policy })
        }
        byRoute.set(route.name, policies)
      }
    } catch (error) {
      abandon()
      throw error
    }
    return {
      byRoute,
      commit: () => {
        for (const [id, entry] of this.#live) if (next.get(id) !== entry) entry.policy.stop?.()
        this.#live = next
        made.length = 0
      },
      abandon,
    }
  }

  stop(): void {
    for (const entry of this.#live.values()) entry.policy.stop?.()
    this.#live.clear()
  }
}
