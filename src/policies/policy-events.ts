/**
 * A counter of one policy's decisions, by route and labels of its own (`outcome`, `reason`, …): declared by the
 * policy in its folder, counted under the declaration itself, exported by the metrics as it says.
 */
export class PolicyCounter {
  /** The labels the counted outcome goes under, beside `route`. */
  readonly labels: readonly string[]

  constructor(
    /** The Prometheus family, e.g. `portico_retries_total`. */
    readonly name: string,
    readonly help: string,
    ...labels: [string, ...string[]]
  ) {
    this.labels = labels
  }

  /** The outcome to count for a counter of several labels: their values, in the order of `labels`. */
  static outcome(...values: string[]): string {
    return values.join(LABEL_SEPARATOR)
  }

  /** An outcome's value of each label. */
  valuesOf(outcome: string): string[] {
    return this.labels.length === 1 ? [outcome] : outcome.split(LABEL_SEPARATOR)
  }
}

const LABEL_SEPARATOR = '\u0000'

/**
 * What the policies decided, counted by counter, route and outcome: plain numbers on the request path (nested maps, no
 * label hashing, no allocation once a series exists), turned into Prometheus samples when it scrapes.
 */
export class PolicyEvents {
  readonly #counts = new Map<PolicyCounter, Map<string, Map<string, number>>>()

  count(counter: PolicyCounter, route: string, outcome: string): void {
    let routes = this.#counts.get(counter)
    if (!routes) this.#counts.set(counter, (routes = new Map()))
    let outcomes = routes.get(route)
    if (!outcomes) routes.set(route, (outcomes = new Map()))
    outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1)
  }

  *of(counter: PolicyCounter): Iterable<{ route: string; outcome: string; count: number }> {
    for (const [route, outcomes] of this.#counts.get(counter) ?? []) for (const [outcome, count] of outcomes) yield { route, outcome, count }
  }

  /** One route's counts so far, by outcome. */
  ofRoute(counter: PolicyCounter, route: string): ReadonlyMap<string, number> {
    return this.#counts.get(counter)?.get(route) ?? NONE
  }
}

const NONE: ReadonlyMap<string, number> = new Map()
