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
