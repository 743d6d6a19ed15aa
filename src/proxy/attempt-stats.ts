/** Upper bounds (seconds) of the attempt duration buckets: the same as the request durations'. */
export const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

/** One series' counts: requests, failures, and durations as non-cumulative bucket counts (the last past the largest bound). */
export class DurationCounts {
  readonly inBucket: number[] = new Array<number>(DURATION_BUCKETS.length + 1).fill(0)
  seconds = 0
  count = 0
  failures = 0

  record(seconds: number, failed: boolean): void {
    let bucket = 0
    while (bucket < DURATION_BUCKETS.length && seconds > (DURATION_BUCKETS[bucket] as number)) bucket++
    this.inBucket[bucket] = (this.inBucket[bucket] ?? 0) + 1
    this.seconds += seconds
    this.count++
    if (failed) this.failures++
  }
}

/**
 * Every upstream attempt by route and instance (its time to response headers, and whether it failed): plain numbers
 * on the request path, read at scrape time, where instances no longer served are dropped with their series.
 */
export class AttemptStats {
  readonly byRoute = new Map<string, Map<string, DurationCounts>>()

  record(route: string, instance: string, ms: number, failed: boolean): void {
    let instances = this.byRoute.get(route)
    if (!instances) this.byRoute.set(route, (instances = new Map()))
    let counts = instances.get(instance)
    if (!counts) instances.set(instance, (counts = new DurationCounts()))
    counts.record(ms / 1000, failed)
  }

  /** Forgets instances that `current` no longer has (they come and go: their series must too). */
  keepOnly(current: ReadonlyMap<string, ReadonlySet<string>>): void {
    for (const [route, instances] of this.byRoute) {
      const live = current.get(route)
      if (!live) this.byRoute.delete(route)
      else for (const instance of instances.keys()) if (!live.has(instance)) instances.delete(instance)
    }
  }
}
