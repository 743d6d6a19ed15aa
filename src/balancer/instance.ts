/** One upstream instance, as the balancer sees it: from a static list or from Consul. */
export interface Instance {
  /** Stable identity (Consul service id, or the URL for static upstreams). */
  readonly id: string
  /** `http://host:port`, what requests are sent to. */
  readonly origin: string
  /** Relative share of traffic for weighted balancers; 1 when not set. */
  readonly weight: number
  readonly tags: readonly string[]
  readonly meta: Readonly<Record<string, string>>
}

export function staticInstance(url: string): Instance {
  return { id: url, origin: url, weight: 1, tags: [], meta: {} }
}

/** Where a `service:` route's instances come from (Consul); static routes need none. */
export interface ServiceInstances {
  /** The instances of `service` now; an empty list when none pass their checks. */
  instances(service: string): readonly Instance[]
  /** Called on each route table swap with the services the table references. */
  follow(services: ReadonlySet<string>): void
}
