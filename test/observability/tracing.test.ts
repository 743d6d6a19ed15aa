import { createHash } from 'node:crypto'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { createServer, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { makeRoutesDir, spawnGateway, type GatewayProcess } from '../support/gateway.js'
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from '../support/otlp-receiver.js'
import { waitFor } from '../support/poll.js'
import { freePort } from '../support/ports.js'
import { startUpstream, type Upstream } from '../support/upstream.js'

const SERVER = 2
const CLIENT = 3
const ERROR = 2

describe('OpenTelemetry tracing to a real OTLP/HTTP receiver', () => {
  let receiver: OtlpReceiver
  let upstream: Upstream
  let gateway: GatewayProcess
  let dir: string
  let dead: number
  beforeAll(async () => {
    receiver = await startOtlpReceiver()
    upstream = await startUpstream('traced')
    dead = await freePort()
    dir = await mkdtemp(join(tmpdir(), 'portico-trace-'))
    const routes = await makeRoutesDir({
      'r.yaml': `routes:
  - name: traced
    prefix: /traced
    upstreams: [http://127.0.0.1:${dead}, ${upstream.url}]
    loadBalancer: round-robin
    retry: { attempts: 2, backoff: 1ms, budgetPercent: 100 }
  - name: guarded
    prefix: /guarded
    upstreams: [${upstream.url}]
    rateLimit: { key: ip, limits: [{ limit: 1, window: 1h }] }
    circuitBreaker: { volumeThreshold: 100 }
    cache: { ttl: 1h }
  - name: keyed
    prefix: /keyed
    upstreams: [${upstream.url}]
    auth: { apiKey: { in: "query:key" } }
  - name: odd
    prefix: /odd
    upstreams: ['http://127.0.0.1:${dead}', 'http://[zz]:80']
    loadBalancer: round-robin
    retry: { attempts: 2, backoff: 1ms, budgetPercent: 100 }
consumers:
  - name: tracer
    apiKeys: [sha256:${createHash('sha256').update('pk_traced-key').digest('hex')}]
`,
    })
    gateway = await spawnGateway(routes, {
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_SERVICE_NAME: 'edge-gateway',
      OTEL_BSP_SCHEDULE_DELAY: '100',
      PORTICO_ACCESS_LOG: join(dir, 'access.log'),
    })
  })
  afterAll(async () => {
    await gateway?.stop('SIGKILL')
    await upstream?.close()
    await receiver?.close()
    await rm(dir, { recursive: true, force: true })
  })

  const spansOf = (traceId: string) => waitFor(() => {
    const spans = receiver.spans.filter((s) => s.traceId === traceId)
    return spans.some((s) => s.kind === SERVER) ? spans : undefined
  }, { what: `the spans of trace ${traceId}` })

  it('puts on the request\'s span what each policy set on the request (rate limit decision, breaker state, cache outcome)', async () => {
    const attributesOf = async (path: string) => {
      const response = await request(`${gateway.url}${path}`)
      await response.body.dump()
      // The access line names the request's trace.
      const line = await waitFor(async () => (await readFile(join(dir, 'access.log'), 'utf8').catch(() => '')).split('\n').find((l) => l.includes(String(response.headers['x-request-id']))), { what: 'the access line' })
      const spans = await spansOf((JSON.parse(line) as { traceId: string }).traceId)
      return { attributes: spans.find((s) => s.kind === SERVER)?.attributes ?? {}, line: JSON.parse(line) as Record<string, unknown> }
    }
    const first = await attributesOf('/guarded/page')
    expect(first.attributes).toMatchObject({ 'portico.rate_limit.decision': 'allowed', 'portico.circuit_breaker.state': 'closed', 'portico.cache.outcome': 'miss' })
    expect(first.line.cache).toBe('miss')
    const refused = await attributesOf('/guarded/page')
    expect(refused.attributes['portico.rate_limit.decision']).toBe('refused')
    expect(refused.attributes['portico.cache.outcome']).toBeUndefined() // the limit answered before the cache looked
    expect(refused.line.cache).toBeUndefined()
  })

  it('puts the consumer on the span, and never the API key a query carried', async () => {
    const response = await request(`${gateway.url}/keyed/item?page=2&key=pk_traced-key`)
    await response.body.dump()
    expect(response.statusCode).toBe(200)
    const [, traceId = ''] = String(upstream.requests.at(-1)?.headers.traceparent).split('-')
    const spans = await spansOf(traceId)
    const server = spans.find((s) => s.kind === SERVER) as ReceivedSpan
    expect(server.attributes).toMatchObject({ 'portico.consumer': 'tracer', 'url.query': 'page=2&key=[redacted]' })
    expect(JSON.stringify(spans)).not.toContain('pk_traced-key')
    expect(upstream.requests.at(-1)?.url).toBe('/keyed/item?page=2')
  })

  it('exports a server span and one client span per attempt of a retried request, parented, and the upstream continues the trace', async () => {
    // round robin: the first request goes to the dead instance first, then is retried on the live one
    const response = await request(`${gateway.url}/traced/item?x=1`)
    await response.body.dump()
    expect(response.statusCode).toBe(200)
    const traceparent = String(upstream.requests.at(-1)?.headers.traceparent)
    const [, traceId = '', parentId] = traceparent.split('-')
    const spans = await spansOf(traceId)
    const server = spans.find((s) => s.kind === SERVER) as ReceivedSpan
    const attempts = spans.filter((s) => s.kind === CLIENT).sort((a, b) => Number(a.attributes['portico.attempt']) - Number(b.attributes['portico.attempt']))
    expect(server.name).toBe('GET /traced')
    expect(server.parentSpanId).toBe('')
    expect(server.attributes).toMatchObject({ 'http.request.method': 'GET', 'http.route': '/traced', 'http.response.status_code': 200, 'portico.route': 'traced', 'portico.attempt': 2, 'portico.instance': upstream.url, 'url.path': '/traced/item', 'url.query': 'x=1' })
    expect(server.resource).toMatchObject({ 'service.name': 'edge-gateway' })
    expect(attempts).toHaveLength(2)
    for (const attempt of attempts) expect(attempt.parentSpanId).toBe(server.spanId)
    expect(attempts[0]?.attributes).toMatchObject({ 'portico.attempt': 1, 'portico.instance': `http://127.0.0.1:${dead}` })
    expect(attempts[0]?.status.code).toBe(ERROR)
    expect(attempts[1]?.attributes).toMatchObject({ 'portico.attempt': 2, 'portico.instance': upstream.url, 'http.response.status_code': 200, 'http.request.resend_count': 1 })
    // the upstream's parent is the attempt that reached it
    expect(parentId).toBe(attempts[1]?.spanId)
    // and the access log names the trace
    await waitFor(async () => (await readFile(join(dir, 'access.log'), 'utf8')).includes(`"traceId":"${traceId}"`), { what: 'the access line with the trace id' })
  })

  it('survives a retry to an instance address no URL can be made of (sent from a timer, where a throw ends the process)', async () => {
    // whether a request starts on the dead instance and is retried onto the odd one, or starts on the odd one: 502
    for (let i = 0; i < 2; i++) {
      const odd = await request(`${gateway.url}/odd`)
      await odd.body.dump()
      expect(odd.statusCode).toBe(502)
    }
    const next = await request(`${gateway.url}/traced/after`)
    await next.body.dump()
    expect(next.statusCode).toBe(200)
    expect(gateway.child.exitCode).toBe(null)
  })

  it('continues the client\'s W3C trace', async () => {
    const traceId = 'a1b2c3d4e5f60718293a4b5c6d7e8f90'
    const clientSpan = '1122334455667788'
    const response = await request(`${gateway.url}/traced/again`, { headers: { traceparent: `00-${traceId}-${clientSpan}-01` } })
    await response.body.dump()
    const server = (await spansOf(traceId)).find((s) => s.kind === SERVER) as ReceivedSpan
    expect(server.parentSpanId).toBe(clientSpan)
    expect(String(upstream.requests.at(-1)?.headers.traceparent)).toMatch(new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`))
  })
})

describe('tracing with a sampling ratio (OTEL_TRACES_SAMPLER=parentbased_traceidratio)', () => {
  it('exports no span of an unsampled request yet passes its trace on; a client\'s sampled trace is exported whole, with its attributes', async () => {
    const receiver = await startOtlpReceiver()
    const upstream = await startUpstream('sampled')
    const routes = await makeRoutesDir({ 'r.yaml': `routes:\n  - name: sampled\n    prefix: /sampled\n    upstreams: [${upstream.url}]\n` })
    const gateway = await spawnGateway(routes, { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_BSP_SCHEDULE_DELAY: '50', OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0' })
    try {
      for (let i = 0; i < 20; i++) await (await request(`${gateway.url}/sampled/${i}?q=${i}`)).body.dump()
      const unsampled = upstream.requests.map((r) => String(r.headers.traceparent))
      expect(unsampled).toHaveLength(20)
      for (const traceparent of unsampled) expect(traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/)
      const traceId = 'b1b2c3d4e5f60718293a4b5c6d7e8f90'
      await (await request(`${gateway.url}/sampled/kept?q=1`, { headers: { traceparent: `00-${traceId}-1122334455667788-01`, 'user-agent': 'sampler-test' } })).body.dump()
      const spans = await waitFor(() => {
        const found = receiver.spans.filter((span) => span.traceId === traceId)
        return found.length === 2 ? found : undefined
      }, { what: 'the sampled trace\'s two spans' })
      const server = spans.find((span) => span.kind === SERVER) as ReceivedSpan
      const client = spans.find((span) => span.kind === CLIENT) as ReceivedSpan
      expect(server.attributes).toMatchObject({ 'http.request.method': 'GET', 'url.path': '/sampled/kept', 'url.query': 'q=1', 'user_agent.original': 'sampler-test', 'http.route': '/sampled', 'http.response.status_code': 200 })
      expect(client.attributes).toMatchObject({ 'url.full': `${upstream.url}/sampled/kept?q=1`, 'server.address': '127.0.0.1', 'server.port': Number(new URL(upstream.url).port), 'portico.route': 'sampled', 'portico.attempt': 1 })
      expect(String(upstream.requests.at(-1)?.headers.traceparent)).toMatch(new RegExp(`^00-${traceId}-${client.spanId}-01$`))
      // Nothing of the 20 unsampled requests reached the receiver.
      expect(receiver.spans.filter((span) => span.traceId !== traceId)).toEqual([])
    } finally {
      await gateway.stop('SIGKILL')
      await upstream.close()
      await receiver.close()
    }
  })
})

describe('tracing with a dead collector', () => {
  it('never slows or fails a request', async () => {
    const upstream = await startUpstream('plain')
    // A collector that takes connections and never answers: an export a request waited for would hold it for the
    // exporter's whole timeout (10 s), far past the bound below, which leaves room for a busy machine.
    const held: Socket[] = []
    const blackhole = createServer((socket) => void held.push(socket.on('error', () => undefined)))
    await new Promise<void>((resolve) => blackhole.listen(0, '127.0.0.1', resolve))
    const collector = (blackhole.address() as { port: number }).port
    const routes = await makeRoutesDir({ 'r.yaml': `routes:\n  - name: plain\n    prefix: /plain\n    upstreams: [${upstream.url}]\n` })
    const gateway = await spawnGateway(routes, { OTEL_TRACES_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${collector}`, OTEL_BSP_SCHEDULE_DELAY: '50' })
    try {
      const slowest = { ms: 0 }
      for (let round = 0; round < 10; round++) {
        const statuses = await Promise.all(
          Array.from({ length: 20 }, async () => {
            const started = performance.now()
            const response = await request(`${gateway.url}/plain`)
            await response.body.dump()
            slowest.ms = Math.max(slowest.ms, performance.now() - started)
            return response.statusCode
          }),
        )
        expect(statuses).toEqual(Array(20).fill(200))
      }
      expect(slowest.ms).toBeLessThan(3_000)
      expect(gateway.output()).toContain('tracing: exporting spans over OTLP/HTTP')
    } finally {
      await gateway.stop('SIGKILL')
      await upstream.close()
      for (const socket of held) socket.destroy()
      blackhole.close()
    }
  })
})
