import { collectDefaultMetrics, Counter, Gauge, Registry, type Metric, type MetricValueWithName } from 'prom-client'
import type { ComponentHealth } from '../kernel/health.js'
import type { RequestRecord } from '../proxy/gateway.js'

export interface MetricsSources {
  /** Per route: its breaker's state, when it has one. */
  readonly breakers: () => Iterable<{ route: string; state: 'closed' | 'open' | 'half-open' }>
  readonly discovery: () => ComponentHealth
  readonly sharedState: () => ComponentHealth
  readonly routes: () => { version: number; routes: number; refusedSources: number }
}

const BREAKER_STATE = { closed: 0, 'half-open': 1, open: 2 } as const
const DURATION = 'portico_request_duration_seconds'
const DURATION_HELP = 'Time to the response being sent, by route.'
const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

/** One route's answered requests: plain numbers on the request path, turned into Prometheus samples at scrape time. */
class RouteTraffic {
  readonly byStatus = new Map<number, number>()
  /** Non-cumulative counts per duration bucket; the last one is beyond the largest bound. */
  readonly inBucket: number[] = new Array<number>(DURATION_BUCKETS.length + 1).fill(0)
  seconds = 0
  count = 0

  record(status: number, seconds: number): void {
    this.byStatus.set(status, (this.byStatus.get(status) ?? 0) + 1)
    let bucket = 0
    while (bucket < DURATION_BUCKETS.length && seconds > (DURATION_BUCKETS[bucket] as number)) bucket++
    this.inBucket[bucket] = (this.inBucket[bucket] ?? 0) + 1
    this.seconds += seconds
    this.count++
  }

  durationSamples(route: string): MetricValueWithName<string>[] {
    let cumulative = 0
    const buckets = DURATION_BUCKETS.map((le, i) => {
      cumulative += this.inBucket[i] ?? 0
      return { metricName: `${DURATION}_bucket`, labels: { route, le }, value: cumulative }
    })
    return [
      ...buckets,
      { metricName: `${DURATION}_bucket`, labels: { route, le: '+Inf' }, value: this.count },
      { metricName: `${DURATION}_sum`, labels: { route }, value: this.seconds },
      { metricName: `${DURATION}_count`, labels: { route }, value: this.count },
    ]
  }
}

/**
 * Prometheus metrics of one gateway process, on its own registry (no module globals: tests make their own).
 * Per request, only plain counters move: prom-client's own counters and histograms hash their labels and allocate on
 * every call, which cost a tenth of the proxy's throughput. Everything is turned into samples when Prometheus scrapes.
 */
export class GatewayMetrics {
  readonly registry = new Registry()
  readonly #problems: Counter<'route' | 'code'>
  readonly #traffic = new Map<string, RouteTraffic>()

  constructor(sources: MetricsSources) {
    const registers = [this.registry]
    const traffic = this.#traffic
    collectDefaultMetrics({ register: this.registry, prefix: 'portico_process_' })
    new Counter({
      name: 'portico_requests_total',
      help: 'Requests answered, by route and status.',
      labelNames: ['route', 'status'],
      registers,
      collect() {
        this.reset()
        for (const [route, t] of traffic) for (const [status, n] of t.byStatus) this.inc({ route, status }, n)
      },
    })
    // A histogram of our own counts, in the shape prom-client's registry reads from its own histograms.
    this.registry.registerMetric({
      name: DURATION,
      help: DURATION_HELP,
      get: async () => ({ name: DURATION, help: DURATION_HELP, type: 'histogram', aggregator: 'sum', values: [...traffic].flatMap(([route, t]) => t.durationSamples(route)) }),
      reset: () => traffic.clear(),
    } as unknown as Metric)
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

  recordRequest({ route, status, durationMs, code }: RequestRecord): void {
    let traffic = this.#traffic.get(route)
    if (!traffic) {
      traffic = new RouteTraffic()
      this.#traffic.set(route, traffic)
    }
    traffic.record(status, durationMs / 1000)
    if (code) this.#problems.inc({ route, code })
  }
}

function servicesOf(health: ComponentHealth): Record<string, { instances: number; stale: boolean }> {
  return (health.services ?? {}) as Record<string, { instances: number; stale: boolean }>
}
