import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startGateway, type TestGateway } from '../support/gateway.js'
import { startUpstream, type Upstream } from '../support/upstream.js'

const ROUTES = 1_000

/**
 * The status page's feed's events, as they come: name and data length, until `enough` says so (or 20 s passed).
 * `opened` is called once the feed answered.
 */
async function readFeed(url: string, enough: (events: { event: string; bytes: number; data: string }[]) => boolean, opened: () => void = () => undefined): Promise<{ event: string; bytes: number; data: string }[]> {
  const controller = new AbortController()
  const response = await request(url, { signal: AbortSignal.any([controller.signal, AbortSignal.timeout(20_000)]) })
  opened()
  const events: { event: string; bytes: number; data: string }[] = []
  let buffer = ''
  try {
    for await (const chunk of response.body) {
      buffer += chunk.toString()
      for (let end = buffer.indexOf('\n\n'); end !== -1; end = buffer.indexOf('\n\n')) {
        const block = buffer.slice(0, end)
        buffer = buffer.slice(end + 2)
        const data = block.split('\n').find((line) => line.startsWith('data: '))?.slice(6) ?? ''
        events.push({ event: block.split('\n').find((line) => line.startsWith('event: '))?.slice(7) ?? '', bytes: Buffer.byteLength(block) + 2, data })
      }
      if (enough(events)) break
    }
  } finally {
    controller.abort()
  }
  return events
}

describe(`the status page's feed with ${ROUTES} routes`, () => {
  let upstream: Upstream
  let gateway: TestGateway
  beforeAll(async () => {
    upstream = await startUpstream('catalog')
    const routes = Array.from({ length: ROUTES }, (_, i) => `  - name: route-${i}\n    prefix: /r${i}\n    upstreams: [${upstream.url}]\n    circuitBreaker: {}\n    rateLimit: { limit: 100, window: 1s }\n`).join('')
    gateway = await startGateway({ 'r.yaml': `routes:\n${routes}` })
  })
  afterAll(async () => {
    await gateway?.close()
    await upstream?.close()
  })

  it('carries a bounded snapshot each second, and a slot of every route with traffic each 5 s', async () => {
    // The feed first: the slot that counts the requests must end while it is read.
    let opened = (): void => undefined
    const open = new Promise<void>((resolve) => (opened = resolve))
    const reading = readFeed(`${gateway.adminUrl}/admin/events`, (seen) => seen.some((e) => e.event === 'slot' && Object.keys(JSON.parse(e.data).routes).length > 0), opened)
    await open
    for (let batch = 0; batch < ROUTES; batch += 100) await Promise.all(Array.from({ length: 100 }, async (_, i) => (await request(`${gateway.url}/r${batch + i}/x`)).body.dump()))
    const events = await reading
    const snapshot = events.find((e) => e.event === 'snapshot')
    const history = events.find((e) => e.event === 'history')
    const slot = events.filter((e) => e.event === 'slot').at(-1)
    if (!snapshot || !history || !slot) throw new Error(`the feed sent ${events.map((e) => e.event).join(', ')}`)
    const shown = JSON.parse(snapshot.data) as { routes: unknown[]; routeCount: number; routesMatched: number }
    expect(shown.routes).toHaveLength(200)
    expect(shown).toMatchObject({ routeCount: ROUTES, routesMatched: ROUTES })
    expect(Object.keys((JSON.parse(history.data) as { routes: object }).routes).length).toBeLessThanOrEqual(200)
    console.log(`feed with ${ROUTES} routes: snapshot ${(snapshot.bytes / 1024).toFixed(0)} KiB a second (200 routes shown), history ${(history.bytes / 1024).toFixed(0)} KiB once, slot ${(slot.bytes / 1024).toFixed(1)} KiB each 5 s`)
    expect(snapshot.bytes).toBeLessThan(200 * 1024)
    expect(slot.bytes).toBeLessThan(200 * 40)
    // a filter shows the others
    const filtered = await readFeed(`${gateway.adminUrl}/admin/events?route=route-999`, (seen) => seen.some((e) => e.event === 'snapshot'))
    expect((JSON.parse(filtered.find((e) => e.event === 'snapshot')?.data ?? '{}') as { routes: { name: string }[] }).routes.map((r) => r.name)).toEqual(['route-999'])
  }, 60_000)
})
