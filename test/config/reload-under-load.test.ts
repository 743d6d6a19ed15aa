import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startGateway, type TestGateway } from '../support/gateway.js'
import { waitFor } from '../support/poll.js'
import { routeFile } from '../support/routes.js'
import { startUpstream, type Upstream } from '../support/upstream.js'

describe('reloads that change a route\'s policies, under load', () => {
  let slow: Upstream, busy: Upstream
  let gateway: TestGateway
  // Half the requests meet the busy instance first and wait in a retry backoff: in flight across every swap.
  const file = (i: number) =>
    routeFile(
      'edited',
      '/edited',
      [busy.url, slow.url],
      `rateLimit: { limit: ${1_000_000 + i}, window: 1h }`,
      `concurrencyLimit: { limit: ${500 + i} }`,
      `retry: { attempts: 2, on: [503], backoff: ${40 + i}ms, budgetPercent: 100 }`,
      `circuitBreaker: { volumeThreshold: ${1000 + i} }`,
      `outlierDetection: { consecutiveFailures: ${50 + i} }`,
    )
  beforeAll(async () => {
    slow = await startUpstream('slow', (_req, res) => setTimeout(() => res.end('ok'), 20))
    busy = await startUpstream('busy', (_req, res) => res.writeHead(503).end('busy'))
    gateway = await startGateway({ 'r.yaml': file(0) })
  })
  afterAll(async () => {
    await gateway?.close()
    await Promise.all([slow?.close(), busy?.close()])
  })

  it('answers no request with a 5xx of its own across 30 swaps (requests finish on the policies they started with)', async () => {
    const statuses: number[] = []
    let reloading = true
    const load = Array.from({ length: 8 }, async () => {
      while (reloading) {
        const response = await request(`${gateway.url}/edited`)
        await response.body.dump()
        statuses.push(response.statusCode)
      }
    })
    const admin = async () => ((await (await request(`${gateway.adminUrl}/admin/routes`)).body.json()) as { version: number }).version
    for (let i = 1; i <= 30; i++) {
      const before = await admin()
      await gateway.writeRoutes('r.yaml', file(i))
      await waitFor(async () => (await admin()) > before, { what: `swap ${i}` })
    }
    reloading = false
    await Promise.all(load)
    expect(statuses.length).toBeGreaterThan(100)
    expect(statuses.filter((s) => s !== 200)).toEqual([])
  })
})
