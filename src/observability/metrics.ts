import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { ComponentHealth } from '../admin/health.js'

export interface MetricsSources {
  /** Per route: its breaker's state, when it has one. */
  readonly breakers: () => Iterable<{ route: string; state: 'closed' | 'open' | 'half-open' }>
  readonly discovery: () => ComponentHealth
  readonly sharedState: () => ComponentHealth
  readonly routes: () => { version: number; routes: number; refusedSources: number }
}

const BREAKER_STATE = { closed: 0, 'half-open': 1, open: 2 } as const

/**
 * Prometheus metrics of one gateway process, on its own registry (no module globals: tests make their own).
 * Per-request metrics are two label lookups; everything else is read when Prometheus scrapes.
 */
export class GatewayMetrics {
  readonly registry = new Registry()
  readonly #requests: Counter<'route' | 'status'>
  readonly #duration: Histogram<'route'>
  readonly #problems: Counter<'route' | 'code'>
  // prom-client hashes the labels on every call; children bound once per route and status skip that.
  readonly #bound = new Map<string, { readonly requests: Map<number, { inc(): void }>; readonly duration: { observe(value: number): void } }>()

  constructor(sources: MetricsSources) {
    const registers = [this.registry]
    collectDefaultMetrics({ register: this.registry, prefix: 'portico_process_' })
    this.#requests = new Counter({ name: 'portico_requests_total', help: 'Requests answered, by route and status.', labelNames: ['route', 'status'], registers })
    this.#duration = new Histogram({
      name: 'portico_request_duration_seconds',
      help: 'Time to the response being sent, by route.',
      labelNames: ['route'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    })
    this.#problems = new Counter({ name: 'portico_gateway_errors_total', help: 'Answers the gateway gave itself, by route and problem code (rate_limited, circuit_open, upstream_timeout, …).', labelNames: ['route', 'code'], registers })
    new Gauge({
      name: 'portico_circuit_breaker_state',
      help: 'Breaker state per route: 0 closed, 1 half-open, 2 open.',
      labelNames: ['route'],
      registers,
      collect() {
        this.reset()
        for (const { route, state } of sources.breakers()) this.set({ route }, BREAKER_STATE[state])
      },
    })
    new Gauge({
      name: 'portico_discovery_instances',
      help: 'Passing instances per Consul service, as last known.',
      labelNames: ['service'],
      registers,
      collect() {
        this.reset()
        for (const [service, s] of Object.entries(servicesOf(sources.discovery()))) this.set({ service }, s.instances)
      },
    })
    new Gauge({
      name: 'portico_discovery_stale',
      help: '1 while the instances of a service are the last known ones because Consul is unreachable.',
      labelNames: ['service'],
      registers,
      collect() {
        this.reset()
        for (const [service, s] of Object.entries(servicesOf(sources.discovery()))) this.set({ service }, s.stale ? 1 : 0)
      },
    })
    new Gauge({
      name: 'portico_shared_state_up',
      help: '1 while Redis is reachable (or not configured); 0 while limits and breakers run on local state.',
      registers,
      collect() {
        this.set(sources.sharedState().status === 'ok' ? 1 : 0)
      },
    })
    new Gauge({
      name: 'portico_route_table_version',
      help: 'Version of the live route table; it grows with every applied change.',
      registers,
      collect() {
        this.set(sources.routes().version)
      },
    })
    new Gauge({
      name: 'portico_route_sources_refused',
      help: 'Route files (or published routes) refused for errors; their last good version, if any, serves.',
      registers,
      collect() {
        this.set(sources.routes().refusedSources)
      },
    })
  }

  recordResponse(route: string, status: number, seconds: number, problemCode: string | undefined): void {
    let bound = this.#bound.get(route)
    if (!bound) {
      bound = { requests: new Map(), duration: this.#duration.labels({ route }) }
      this.#bound.set(route, bound)
    }
    let requests = bound.requests.get(status)
    if (!requests) {
      requests = this.#requests.labels({ route, status })
      bound.requests.set(status, requests)
    }
    requests.inc()
    bound.duration.observe(seconds)
    if (problemCode) this.#problems.inc({ route, code: problemCode })
  }
}

function servicesOf(health: ComponentHealth): Record<string, { instances: number; stale: boolean }> {
  return (health.services ?? {}) as Record<string, { instances: number; stale: boolean }>
}
