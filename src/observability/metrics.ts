import { collectDefaultMetrics, Counter, Gauge, Registry, type Metric, type MetricValueWithName } from 'prom-client'
import type { PolicyCounter } from '../policies/policy-events.js'
import type { AnyPolicyKind } from '../policies/policy.js'
import { SPLIT_REQUESTS } from '../proxy/compile-route.js'
import type { KeyedPolicy } from '../policies/policy-registry.js'
import { DURATION_BUCKETS, DurationCounts } from '../proxy/attempt-stats.js'

export { DURATION_BUCKETS }
import type { ComponentHealth } from '../kernel/health.js'
import type { RouteTotals } from './traffic-history.js'
import type { GatewayStats, RequestRecord } from '../proxy/gateway.js'

export interface MetricsSources {
  /** The policies there are: each adds the counters and gauges it declares. */
  readonly policyKinds: readonly AnyPolicyKind[]
  /** Each split route's targets now. */
  readonly splitTargets: () => Iterable<{ readonly route: string; readonly target: string; readonly available: boolean }>
  /** Each live route's policies, for the policies' gauges (a split target's under `<route>/<target>`). */
  readonly livePolicies: () => Iterable<{ readonly route: string; readonly policies: readonly KeyedPolicy[] }>
  readonly discovery: () => ComponentHealth
  readonly sharedState: () => ComponentHealth
  readonly routes: () => { version: number; routes: number; refusedSources: number }
  readonly gateway: () => GatewayStats
  /** Breakers an operator forced open or closed. */
  readonly forcedBreakers: () => Iterable<{ route: string; state: 'open' | 'closed' }>
  /** Redis command counts, when the gateway has Redis. */
  readonly redisCommands: () => { readonly sent: number; readonly failed: number } | undefined
  /** Access log lines dropped (a destination that refused them or fell behind). */
  readonly accessLogDropped: () => number
  /** With TLS: the certificates served and the HTTP/2 connections and streams cut. */
  readonly tls?: () => {
    readonly certificates: Iterable<{ readonly name: string; readonly notAfter: Date }>
    readonly refused: number
    readonly cut: Iterable<[reason: string, count: number]>
  }
}

const DURATION = 'portico_request_duration_seconds'
const DURATION_HELP = 'Time to the response being sent, by route.'
const ATTEMPT_DURATION = 'portico_upstream_attempt_duration_seconds'
const ATTEMPT_DURATION_HELP = 'Time from an upstream attempt\'s start (waiting for a pooled connection included) to its response headers, by route and instance.'

/**
 * One route's answered requests: plain numbers on the request path, turned into Prometheus samples at scrape time and
 * into the traffic history's slots every 5 s.
 */
class RouteTraffic implements RouteTotals {
  readonly byStatus = new Map<number, number>()
  /** Answers the gateway gave itself, by problem code. */
  readonly codes = new Map<string, number>()
  readonly durations = new DurationCounts()

  constructor(readonly route: string) {}

  get durationBuckets(): readonly number[] {
    return this.durations.inBucket
  }

  record(status: number, seconds: number, code: string | undefined): void {
    this.byStatus.set(status, (this.byStatus.get(status) ?? 0) + 1)
    if (code !== undefined) this.codes.set(code, (this.codes.get(code) ?? 0) + 1)
    this.durations.record(seconds, false)
  }
}

/** A histogram's samples from non-cumulative bucket counts, in the shape prom-client's registry reads. */
function histogramSamples(name: string, labels: Record<string, string>, counts: DurationCounts): MetricValueWithName<string>[] {
  let cumulative = 0
  const buckets = DURATION_BUCKETS.map((le, i) => {
    cumulative += counts.inBucket[i] ?? 0
    return { metricName: `${name}_bucket`, labels: { ...labels, le }, value: cumulative }
  })
  return [
    ...buckets,
    { metricName: `${name}_bucket`, labels: { ...labels, le: '+Inf' }, value: counts.count },
    { metricName: `${name}_sum`, labels, value: counts.seconds },
    { metricName: `${name}_count`, labels, value: counts.count },
  ]
}

/** A histogram metric whose samples are computed at scrape time. */
function scrapedHistogram(registry: Registry, name: string, help: string, samples: () => MetricValueWithName<string>[], reset: () => void = () => undefined): void {
  registry.registerMetric({
    name,
    help,
    get: async () => ({ name, help, type: 'histogram', aggregator: 'sum', values: samples() }),
    reset,
  } as unknown as Metric)
}

/** A counter read from plain numbers at scrape time. */
function scrapedCounter<L extends string>(registers: Registry[], name: string, help: string, labelNames: L[], read: () => Iterable<[Partial<Record<L, string>>, number]>): void {
  new Counter({
    name,
    help,
    labelNames,
    registers,
    collect() {
      this.reset()
      for (const [labels, value] of read()) this.inc(labels, value)
    },
  })
}

/**
 * Prometheus metrics of one gateway process, on its own registry (no module globals: tests make their own).
 * Per request, only plain counters move: prom-client's own counters and histograms hash their labels and allocate on
 * every call, which cost a tenth of the proxy's throughput. Everything is turned into samples when Prometheus scrapes.
 */
export class GatewayMetrics {
  readonly registry = new Registry()
  readonly #traffic = new Map<string, RouteTraffic>()

  constructor(sources: MetricsSources) {
    const registers = [this.registry]
    const traffic = this.#traffic
    // prom-client's names already say process_ / nodejs_: the prefix is ours alone.
    collectDefaultMetrics({ register: this.registry, prefix: 'portico_' })
    scrapedCounter(registers, 'portico_requests_total', 'Requests answered, by route and status (499: the client left first).', ['route', 'status'], function* () {
      for (const [route, t] of traffic) for (const [status, n] of t.byStatus) yield [{ route, status: String(status) }, n]
    })
    scrapedCounter(registers, 'portico_access_log_dropped_lines_total', 'Access log lines dropped: the destination refused them (a full disk) or fell too far behind. Requests never wait on the log.', [], function* () {
      yield [{}, sources.accessLogDropped()]
    })
    // Registered with or without TLS (no samples without), so dashboards and alert rules name metrics that exist.
    const tls = () => sources.tls?.()
    new Gauge({
      name: 'portico_tls_certificate_expiry_seconds',
      help: 'Seconds until each served certificate expires (negative: expired, still served for want of a renewal that passes its checks).',
      labelNames: ['certificate'],
      registers,
      collect() {
        this.reset()
        const now = Date.now()
        for (const { name, notAfter } of tls()?.certificates ?? []) this.set({ certificate: name }, Math.round((notAfter.getTime() - now) / 1000))
      },
    })
    new Gauge({
      name: 'portico_tls_certificates_refused',
      help: 'Certificate pairs whose files fail their checks now (the last good version of each keeps serving).',
      registers,
      collect() {
        this.set(tls()?.refused ?? 0)
      },
    })
    scrapedCounter(registers, 'portico_http2_cut_total', 'HTTP/2 connections cut for going past a budget (rapid_reset, ping_flood, settings_flood) and streams cut for taking no byte of their answer (stalled_stream).', ['reason'], function* () {
      for (const [reason, count] of tls()?.cut ?? []) yield [{ reason }, count]
    })
    scrapedHistogram(this.registry, DURATION, DURATION_HELP, () => [...traffic].flatMap(([route, t]) => histogramSamples(DURATION, { route }, t.durations)), () => traffic.clear())
    new Gauge({
      name: 'portico_open_connections',
      help: 'Client connections open on the traffic port.',
      registers,
      async collect() {
        this.set(await sources.gateway().connections())
      },
    })
    new Gauge({
      name: 'portico_requests_in_flight',
      help: 'Requests under way, by route.',
      labelNames: ['route'],
      registers,
      collect() {
        this.reset()
        for (const [route, count] of sources.gateway().activeRequests()) this.set({ route }, count)
      },
    })
    const attemptsByInstance = () => [...sources.gateway().attempts().byRoute].flatMap(([route, instances]) => [...instances].map(([instance, counts]) => ({ route, instance, counts })))
    scrapedCounter(registers, 'portico_upstream_attempts_total', 'Upstream attempts by route and instance (instances leave with their series).', ['route', 'instance'], function* () {
      for (const { route, instance, counts } of attemptsByInstance()) yield [{ route, instance }, counts.count]
    })
    scrapedCounter(registers, 'portico_upstream_attempt_failures_total', 'Upstream attempts that failed (5xx, connect error, timeout), by route and instance.', ['route', 'instance'], function* () {
      for (const { route, instance, counts } of attemptsByInstance()) yield [{ route, instance }, counts.failures]
    })
    scrapedHistogram(this.registry, ATTEMPT_DURATION, ATTEMPT_DURATION_HELP, () => attemptsByInstance().flatMap(({ route, instance, counts }) => histogramSamples(ATTEMPT_DURATION, { route, instance }, counts)))
    const eventCounter = (counter: PolicyCounter): void =>
      scrapedCounter(registers, counter.name, counter.help, ['route', ...counter.labels], function* () {
        for (const { route, outcome, count } of sources.gateway().policyEvents.of(counter)) {
          const values = counter.valuesOf(outcome)
          yield [Object.fromEntries([['route', route], ...counter.labels.map((label, i) => [label, values[i] ?? ''])]), count]
        }
      })
    eventCounter(SPLIT_REQUESTS)
    new Gauge({
      name: 'portico_split_target_available',
      help: 'Whether a split route\'s target can take requests (1), or gives its share to the others (0: no instance in rotation, or its breaker open).',
      aggregator: 'min',
      labelNames: ['route', 'target'],
      registers,
      collect() {
        this.reset()
        for (const { route, target, available } of sources.splitTargets()) this.set({ route, target }, available ? 1 : 0)
      },
    })
    for (const kind of sources.policyKinds) {
      for (const counter of kind.counters ?? []) eventCounter(counter)
      for (const gauge of kind.gauges ?? [])
        new Gauge({
          name: gauge.name,
          help: gauge.help,
          aggregator: gauge.aggregator ?? 'sum',
          labelNames: ['route'],
          registers,
          collect() {
            this.reset()
            for (const { route, policies } of sources.livePolicies()) {
              const live = policies.find((p) => p.key === kind.key)
              if (live) this.set({ route }, gauge.read(live.policy))
            }
          },
        })
    }
    scrapedCounter(registers, 'portico_redis_commands_total', 'Commands sent to Redis.', [], function* () {
      const counts = sources.redisCommands()
      if (counts) yield [{}, counts.sent]
    })
    scrapedCounter(registers, 'portico_redis_command_failures_total', 'Redis commands that failed or timed out.', [], function* () {
      const counts = sources.redisCommands()
      if (counts) yield [{}, counts.failed]
    })
    scrapedCounter(registers, 'portico_gateway_errors_total', 'Answers the gateway gave itself, by route and problem code (rate_limited, circuit_open, upstream_timeout, …).', ['route', 'code'], function* () {
      for (const [route, t] of traffic) for (const [code, n] of t.codes) yield [{ route, code }, n]
    })
    new Gauge({
      name: 'portico_circuit_breaker_forced',
      aggregator: 'max',
      help: '1 for a breaker an operator forced open or closed (by route and state).',
      labelNames: ['route', 'state'],
      registers,
      collect() {
        this.reset()
        for (const { route, state } of sources.forcedBreakers()) this.set({ route, state }, 1)
      },
    })
    new Gauge({
      name: 'portico_discovery_instances',
      aggregator: 'max',
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
      aggregator: 'max',
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
      aggregator: 'min',
      help: '1 while Redis is reachable (or not configured); 0 while limits and breakers run on local state.',
      registers,
      collect() {
        this.set(sources.sharedState().status === 'ok' ? 1 : 0)
      },
    })
    new Gauge({
      name: 'portico_route_table_version',
      aggregator: 'min',
      help: 'Version of the live route table; it grows with every applied change.',
      registers,
      collect() {
        this.set(sources.routes().version)
      },
    })
    new Gauge({
      name: 'portico_route_sources_refused',
      aggregator: 'max',
      help: 'Route files (or published routes) refused for errors; their last good version, if any, serves.',
      registers,
      collect() {
        this.set(sources.routes().refusedSources)
      },
    })
  }

  /**
   * Each route's counts so far (requests, 5xx answers, non-cumulative duration buckets and their bounds): the status
   * page turns two of these into rates and a p99.
   */
  routeTraffic(): { route: string; requests: number; errors: number; buckets: number[] }[] {
    return [...this.#traffic].map(([route, t]) => ({
      route,
      requests: t.durations.count,
      errors: [...t.byStatus].reduce((n, [status, count]) => (status >= 500 ? n + count : n), 0),
      buckets: [...t.durations.inBucket],
    }))
  }

  /** Each route's counts since start (or the last reset), as they are: the traffic history takes its slots from them. */
  routeTotals(): Iterable<RouteTotals> {
    return this.#traffic.values()
  }

  recordRequest({ route, status, durationMs, code }: RequestRecord): void {
    let traffic = this.#traffic.get(route)
    if (!traffic) {
      traffic = new RouteTraffic(route)
      this.#traffic.set(route, traffic)
    }
    traffic.record(status, durationMs / 1000, code)
  }
}

function servicesOf(health: ComponentHealth): Record<string, { instances: number; stale: boolean }> {
  return (health.services ?? {}) as Record<string, { instances: number; stale: boolean }>
}
