import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { GatewayMetrics } from '../../src/observability/metrics.js'
import { emptySources } from '../support/metrics.js'
import type { RequestRecord } from '../../src/proxy/gateway.js'
import { startGateway, type TestGateway } from '../support/gateway.js'
import { startUpstream, type Upstream } from '../support/upstream.js'
import { freePort } from '../support/ports.js'
import { waitFor } from '../support/poll.js'

describe('Prometheus metrics on the admin port', () => {
  let upstream: Upstream
  let gateway: TestGateway
  let dead: number
  beforeAll(async () => {
    upstream = await startUpstream('m')
    dead = await freePort()
    gateway = await startGateway(
      {
        'm.yaml': `routes:
  - name: metered
    prefix: /metered
    upstreams: [${upstream.url}]
    rateLimit: { key: route, limits: [{ limit: 2, window: 1h }] }
    circuitBreaker: { volumeThreshold: 50 }
  - name: nowhere
    prefix: /nowhere
    service: absent-${process.pid}
  - name: flaky
    prefix: /flaky
    upstreams: [http://127.0.0.1:${dead}, ${upstream.url}]
    loadBalancer: round-robin
    retry: { attempts: 2, backoff: 1ms, budgetPercent: 100 }
    outlierDetection: { consecutiveFailures: 1, baseEjectionTime: 1h, maxEjectionPercent: 50 }
  - name: broken
    prefix: /broken
    upstreams: [http://127.0.0.1:${dead}]
    circuitBreaker: { volumeThreshold: 2, errorThresholdPercentage: 50, resetTimeout: 1h }
`,
      },
      {},
      { REDIS_URL: inject('redisUrl'), CONSUL_HTTP_ADDR: inject('consulAddress'), PORTICO_ADMIN_TOKEN: 'open-sesame' },
    )
  })
  afterAll(async () => {
    await gateway?.close()
    await upstream?.close()
  })

  const scrape = async () => {
    const response = await request(`${gateway.adminUrl}/metrics`, { headers: { authorization: 'Bearer open-sesame' } })
    expect(response.statusCode).toBe(200)
    expect(response.headers['content-type']).toMatch(/^text\/plain/)
    return response.body.text()
  }

  it('counts requests by route and status, and gateway answers by problem code', async () => {
    for (const path of ['/metered', '/metered', '/metered', '/missing', '/nowhere']) await (await request(gateway.url + path)).body.dump()
    const text = await scrape()
    expect(text).toContain('portico_requests_total{route="metered",status="200"} 2')
    expect(text).toContain('portico_requests_total{route="metered",status="429"} 1')
    expect(text).toContain('portico_requests_total{route="-",status="404"} 1')
    expect(text).toContain('portico_gateway_errors_total{route="metered",code="rate_limited"} 1')
    expect(text).toContain(`portico_gateway_errors_total{route="nowhere",code="no_instance"} 1`)
    expect(text).toMatch(/portico_request_duration_seconds_count\{route="metered"\} 3/)
    expect(text).toContain('portico_request_duration_seconds_bucket{route="metered",le="+Inf"} 3')
  })

  it('has one prefix, and series per instance, in flight, for connections, policy decisions and Redis', async () => {
    for (let i = 0; i < 2; i++) await (await request(`${gateway.url}/flaky`)).body.dump()
    for (let i = 0; i < 3; i++) await (await request(`${gateway.url}/broken`)).body.dump()
    const text = await scrape()
    const value = (series: string) => Number(text.split('\n').find((l) => l.startsWith(`${series} `))?.split(' ')[1])
    expect(text).not.toContain('portico_process_process_')
    expect(text).toContain('portico_process_cpu_seconds_total')
    expect(text).toContain('portico_nodejs_eventloop_lag_seconds')
    expect(value('portico_open_connections')).toBeGreaterThanOrEqual(0)
    expect(value('portico_requests_in_flight{route="metered"}')).toBe(0)
    expect(value(`portico_upstream_attempts_total{route="metered",instance="${upstream.url}"}`)).toBe(2)
    expect(value(`portico_upstream_attempt_duration_seconds_count{route="metered",instance="${upstream.url}"}`)).toBe(2)
    expect(value(`portico_upstream_attempt_failures_total{route="flaky",instance="http://127.0.0.1:${dead}"}`)).toBe(1)
    expect(value('portico_rate_limit_decisions_total{route="metered",outcome="allowed"}')).toBe(2)
    expect(value('portico_rate_limit_decisions_total{route="metered",outcome="refused"}')).toBe(1)
    expect(value('portico_retries_total{route="flaky",result="retried"}')).toBe(1)
    expect(value('portico_outlier_ejections_total{route="flaky",outcome="ejected"}')).toBe(1)
    expect(value('portico_circuit_breaker_transitions_total{route="broken",to="open"}')).toBe(1)
    expect(value('portico_redis_commands_total')).toBeGreaterThan(0)
    expect(value('portico_redis_command_failures_total')).toBeGreaterThanOrEqual(0) // NOSCRIPT answers before a script is loaded count too
  })

  it('reports breaker, shared state, discovery and route table state', async () => {
    const text = await scrape()
    expect(text).toContain('portico_circuit_breaker_state{route="metered"} 0')
    expect(text).toContain('portico_shared_state_up 1')
    expect(text).toContain(`portico_discovery_stale{service="absent-${process.pid}"} 0`)
    expect(text).toContain('portico_route_table_version 1')
    expect(text).toContain('portico_route_sources_refused 0')
  })

  it('wants the admin token on everything but /healthz and /readyz (probes)', async () => {
    const ready = await request(`${gateway.adminUrl}/readyz`)
    await ready.body.dump()
    expect(ready.statusCode).toBe(200)
    for (const path of ['/metrics', '/admin/routes', '/admin/fleet', '/admin/audit']) {
      const response = await request(gateway.adminUrl + path)
      expect(response.statusCode).toBe(401)
      expect(response.headers['www-authenticate']).toMatch(/^Bearer/)
      expect(((await response.body.json()) as { code: string }).code).toBe('unauthorized')
      const wrong = await request(gateway.adminUrl + path, { headers: { authorization: 'Bearer sesamf' } })
      await wrong.body.dump()
      expect(wrong.statusCode).toBe(401)
    }
    const health = await request(`${gateway.adminUrl}/healthz`)
    expect(health.statusCode).toBe(200)
    await health.body.dump()
    // the scheme is case-insensitive; a shorter or longer token is as wrong as a different one
    for (const [authorization, status] of [['bearer open-sesame', 200], ['BEARER  open-sesame', 200], ['Bearer open-sesam', 401], ['Bearer open-sesame2', 401], ['Basic open-sesame', 401]] as const) {
      const response = await request(`${gateway.adminUrl}/admin/routes`, { headers: { authorization } })
      await response.body.dump()
      expect([authorization, response.statusCode]).toEqual([authorization, status])
    }
  })
  it('drops the series of an instance that is no longer served', async () => {
    await gateway.writeRoutes('m.yaml', `routes:\n  - name: metered\n    prefix: /metered\n    upstreams: [http://127.0.0.1:${dead}]\n`)
    await waitFor(async () => !(await scrape()).includes(`instance="${upstream.url}"`), { what: 'the old instance\'s series to go' })
  })
})

describe('the admin port without a token', () => {
  it('answers only to an address or localhost as Host (no DNS rebinding)', async () => {
    const gateway = await startGateway({ 'r.yaml': 'routes: []\n' })
    try {
      const asHost = async (host: string) => {
        const response = await request(`${gateway.adminUrl}/admin/routes`, { headers: { host } })
        await response.body.dump()
        return response.statusCode
      }
      expect([await asHost('127.0.0.1:9901'), await asHost('localhost:9901'), await asHost('[::1]:9901'), await asHost('10.0.0.7')]).toEqual([200, 200, 200, 200])
      expect(await asHost('evil.example:9901')).toBe(403)
    } finally {
      await gateway.close()
    }
  })
})

const record = (fields: Partial<RequestRecord>): RequestRecord => ({
  requestId: 'id',
  traceId: undefined,
  client: '127.0.0.1',
  method: 'GET',
  protocol: 'HTTP/1.1',
  path: '/',
  upstreamPath: '/',
  route: '-',
  instance: undefined,
  attempts: 1,
  status: 200,
  code: undefined,
  bytesIn: 0,
  bytesOut: 0,
  durationMs: 1,
  upstreamMs: 1,
  clientGone: false,
  cache: undefined,
  ...fields,
})

describe('GatewayMetrics', () => {
  it('counts requests by status and places durations in cumulative buckets', async () => {
    const metrics = new GatewayMetrics(emptySources())
    metrics.recordRequest(record({ route: 'r', status: 200, durationMs: 3 }))
    metrics.recordRequest(record({ route: 'r', status: 200, durationMs: 70 }))
    metrics.recordRequest(record({ route: 'r', status: 504, durationMs: 40_000, code: 'upstream_timeout' }))
    const lines = (await metrics.registry.metrics()).split('\n')
    const sample = (name: string) => lines.find((l) => l.startsWith(`${name} `))?.split(' ')[1]
    expect(sample('portico_requests_total{route="r",status="200"}')).toBe('2')
    expect(sample('portico_requests_total{route="r",status="504"}')).toBe('1')
    expect(sample('portico_request_duration_seconds_bucket{route="r",le="0.005"}')).toBe('1')
    expect(sample('portico_request_duration_seconds_bucket{route="r",le="0.05"}')).toBe('1')
    expect(sample('portico_request_duration_seconds_bucket{route="r",le="0.1"}')).toBe('2')
    expect(sample('portico_request_duration_seconds_bucket{route="r",le="30"}')).toBe('2')
    expect(sample('portico_request_duration_seconds_bucket{route="r",le="+Inf"}')).toBe('3')
    expect(Number(sample('portico_request_duration_seconds_sum{route="r"}'))).toBeCloseTo(40.073, 6)
    expect(sample('portico_request_duration_seconds_count{route="r"}')).toBe('3')
    expect(sample('portico_gateway_errors_total{route="r",code="upstream_timeout"}')).toBe('1')
  })
})
