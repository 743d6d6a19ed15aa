import { mkdtemp, readFile, rename, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { makeRoutesDir, spawnGateway, type GatewayProcess } from '../support/gateway.js'
import { waitFor } from '../support/poll.js'
import { freePort } from '../support/ports.js'
import { startUpstream, type Upstream } from '../support/upstream.js'

interface Line {
  time: number
  requestId: string
  traceId?: string
  client: string
  method: string
  path: string
  upstreamPath?: string
  route: string
  instance?: string
  attempts: number
  status: number
  code?: string
  bytesIn: number
  bytesOut: number
  durationMs: number
  upstreamMs?: number
  clientGone: boolean
}

const linesOf = async (file: string): Promise<Line[]> =>
  (await readFile(file, 'utf8').catch(() => ''))
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Line)

describe('the access log of a real gateway process', () => {
  let dir: string
  let logFile: string
  let fast: Upstream, slow: Upstream, paced: Upstream
  let pacedSeen = 0
  let gateway: GatewayProcess
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portico-access-'))
    logFile = join(dir, 'access.log')
    fast = await startUpstream('fast')
    slow = await startUpstream('slow', (_req, res) => setTimeout(() => res.end('late'), 3_000))
    paced = await startUpstream('paced', (_req, res) => {
      pacedSeen++
      setTimeout(() => res.end('done'), 400)
    })
    const dead = await freePort()
    const routes = await makeRoutesDir({
      'r.yaml': `routes:
  - name: plain
    prefix: /plain
    upstreams: [${fast.url}]
  - name: limited
    prefix: /limited
    upstreams: [${fast.url}]
    rateLimit: { key: route, limit: 1, window: 1h }
  - name: retried
    prefix: /retried
    upstreams: [http://127.0.0.1:${dead}, ${fast.url}]
    retry: { attempts: 2, backoff: 1ms, budgetPercent: 100 }
  - name: slow
    prefix: /slow
    upstreams: [${slow.url}]
  - name: paced
    prefix: /paced
    upstreams: [${paced.url}]
`,
    })
    gateway = await spawnGateway(routes, { PORTICO_ACCESS_LOG: logFile })
  })
  afterAll(async () => {
    await gateway?.stop('SIGKILL')
    await Promise.all([fast, slow, paced].map((u) => u?.close()))
    await rm(dir, { recursive: true, force: true })
  })

  const lineFor = async (requestId: string): Promise<Line> =>
    waitFor(async () => (await linesOf(logFile)).find((l) => l.requestId === requestId), { what: `the access line of ${requestId}` })

  it('writes one line per request with route, instance, attempts, sizes and times; fastify writes none', async () => {
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736'
    const response = await request(`${gateway.url}/plain/items?page=2`, { method: 'POST', body: 'hello', headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01` } })
    const body = await response.body.text()
    const id = String(response.headers['x-request-id'])
    const line = await lineFor(id)
    expect(Math.abs(line.time - Date.now())).toBeLessThan(10_000)
    expect(line).toMatchObject({ traceId, client: '127.0.0.1', method: 'POST', path: '/plain/items?page=2', upstreamPath: '/plain/items?page=2', route: 'plain', instance: fast.url, attempts: 1, status: 200, bytesIn: 5, clientGone: false })
    expect(line.code).toBeUndefined()
    expect(line.bytesOut).toBeGreaterThan(body.length) // headers and body
    expect(line.upstreamMs).toBeGreaterThan(0)
    expect(line.durationMs).toBeGreaterThanOrEqual(line.upstreamMs as number)
    expect((await linesOf(logFile)).filter((l) => l.requestId === id)).toHaveLength(1)
    expect(gateway.output()).not.toMatch(/incoming request|request completed|fetching from remote server/)
  })

  it('says what the gateway answered itself (429), and how many attempts a retried request took', async () => {
    for (let i = 0; i < 2; i++) await (await request(`${gateway.url}/limited`)).body.dump()
    const refused = await request(`${gateway.url}/limited`)
    await refused.body.dump()
    expect(refused.statusCode).toBe(429)
    expect(await lineFor(String(refused.headers['x-request-id']))).toMatchObject({ route: 'limited', status: 429, code: 'rate_limited', attempts: 0 })

    const retried = await request(`${gateway.url}/retried/x`)
    await retried.body.dump()
    expect(retried.statusCode).toBe(200)
    expect(await lineFor(String(retried.headers['x-request-id']))).toMatchObject({ route: 'retried', status: 200, attempts: 2, instance: fast.url })
  })

  it('logs a client that left before the answer as 499, client gone', async () => {
    const id = `abort-${Date.now()}`
    await request(`${gateway.url}/slow`, { headers: { 'x-request-id': id }, signal: AbortSignal.timeout(300) }).catch(() => undefined)
    const line = await lineFor(id)
    expect(line).toMatchObject({ route: 'slow', status: 499, clientGone: true, instance: slow.url })
    expect(line.durationMs).toBeLessThan(2_000)
  })

  it('reopens its file on SIGUSR1 (logrotate), then loses no line on SIGTERM', async () => {
    const rotated = `${logFile}.1`
    await rename(logFile, rotated)
    gateway.child.kill('SIGUSR1')
    await waitFor(() => gateway.output().includes('SIGUSR1'), { what: 'the gateway to take SIGUSR1' })
    // 200 requests in flight when SIGTERM comes: they are answered while the gateway drains, and their lines are the
    // last thing it writes before it exits
    const ids = Array.from({ length: 200 }, (_, i) => `last-${i}`)
    const answers = Promise.all(ids.map(async (id) => (await request(`${gateway.url}/paced/${id}`, { headers: { 'x-request-id': id } })).statusCode))
    await waitFor(() => pacedSeen === 200, { what: 'the upstream to hold all 200' })
    expect(await gateway.stop('SIGTERM')).toBe(0)
    expect(await answers).toEqual(Array(200).fill(200))
    const fresh = await linesOf(logFile)
    expect(fresh.filter((l) => l.requestId.startsWith('last-')).map((l) => l.requestId).sort()).toEqual([...ids].sort())
    expect((await linesOf(rotated)).some((l) => l.requestId.startsWith('last-'))).toBe(false)
  })
})
