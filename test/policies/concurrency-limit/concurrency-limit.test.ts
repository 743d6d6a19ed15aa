import type { ServerResponse } from 'node:http'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { SLOT_LEASE_MS } from '../../../src/policies/concurrency-limit/shared-slots.js'
import { makeRoutesDir, spawnGateway, startGateway, type TestGateway } from '../../support/gateway.js'
import { answer } from '../../support/http.js'
import { waitFor } from '../../support/poll.js'
import { routeFile } from '../../support/routes.js'
import { startUpstream, type Upstream } from '../../support/upstream.js'

/** An upstream that holds every request until `release()`, and tracks how many it holds at most. */
async function holdingUpstream(): Promise<Upstream & { held: () => number; most: () => number; release: () => void }> {
  const held: ServerResponse[] = []
  let most = 0
  let holding = true
  const upstream = await startUpstream('held', (_req, res) => {
    if (!holding) return void res.end('ok')
    held.push(res)
    most = Math.max(most, held.length)
    res.on('close', () => held.splice(held.indexOf(res), 1))
  })
  return Object.assign(upstream, {
    held: () => held.length,
    most: () => most,
    release: () => {
      holding = false
      for (const res of [...held]) res.end('ok')
    },
  })
}

const limitedRoute = (name: string, upstream: string, policy: string) => routeFile(name, `/${name}`, upstream, `concurrencyLimit: ${policy}`)

describe('a concurrency limit shared by two replicas through Redis', () => {
  const redisUrl = inject('redisUrl')
  const route = `cc-${process.pid}`
  let upstream: Awaited<ReturnType<typeof holdingUpstream>>
  let replicas: TestGateway[]
  beforeAll(async () => {
    upstream = await holdingUpstream()
    const files = { 'r.yaml': limitedRoute(route, upstream.url, '{ limit: 3 }') }
    replicas = await Promise.all([startGateway(files, {}, { REDIS_URL: redisUrl }), startGateway(files, {}, { REDIS_URL: redisUrl })])
  })
  afterAll(async () => {
    upstream?.release()
    await Promise.all((replicas ?? []).map((r) => r.close()))
    await upstream?.close()
  })

  it('never has more than the limit in flight across the fleet; the rest get 503 concurrency_limited with Retry-After; slots come back', async () => {
    const answers = Array.from({ length: 8 }, (_, i) => answer(`${replicas[i % 2]!.url}/${route}`))
    const settled: Awaited<(typeof answers)[number]>[] = []
    for (const a of answers) void a.then((r) => settled.push(r))
    await waitFor(() => upstream.held() === 3 && settled.length === 5, { what: 'three held upstream and five refused' })
    expect(settled.every((r) => r.status === 503 && r.code === 'concurrency_limited' && r.headers['retry-after'] === '1')).toBe(true)
    upstream.release()
    const all = await Promise.all(answers)
    expect(all.filter((r) => r.status === 200)).toHaveLength(3)
    expect(upstream.most()).toBe(3)
    // every slot was given back: the whole limit is free again, on both replicas
    const again = await Promise.all([0, 1, 2].map((i) => answer(`${replicas[i % 2]!.url}/${route}`)))
    expect(again.map((r) => r.status)).toEqual([200, 200, 200])
  })
})

describe('slots of a replica that dies', () => {
  const redisUrl = inject('redisUrl')
  const route = `cc-dead-${process.pid}`
  it(`come back by themselves within the lease (${SLOT_LEASE_MS} ms)`, async () => {
    const upstream = await holdingUpstream()
    const files = { 'r.yaml': limitedRoute(route, upstream.url, '{ limit: 2 }') }
    const doomed = await spawnGateway(await makeRoutesDir(files), { REDIS_URL: redisUrl })
    const survivor = await startGateway(files, {}, { REDIS_URL: redisUrl })
    try {
      const held = [answer(`${doomed.url}/${route}`).catch(() => undefined), answer(`${doomed.url}/${route}`).catch(() => undefined)]
      await waitFor(() => upstream.held() === 2, { what: 'the doomed replica to hold both slots' })
      await doomed.stop('SIGKILL')
      await Promise.all(held)
      upstream.release()
      expect((await answer(`${survivor.url}/${route}`)).code).toBe('concurrency_limited')
      const started = Date.now()
      await waitFor(async () => (await answer(`${survivor.url}/${route}`)).status === 200, { timeoutMs: SLOT_LEASE_MS + 3_000, intervalMs: 100, what: 'the dead replica\'s slots to expire' })
      expect(Date.now() - started).toBeLessThan(SLOT_LEASE_MS + 3_000)
    } finally {
      await doomed.stop('SIGKILL')
      await survivor.close()
      await upstream.close()
    }
  })
})

describe('a concurrency limit without Redis (per process)', () => {
  let upstream: Awaited<ReturnType<typeof holdingUpstream>>
  let gateway: TestGateway
  beforeAll(async () => {
    upstream = await holdingUpstream()
    gateway = await startGateway({ 'r.yaml': limitedRoute('one', upstream.url, '{ limit: 1 }') })
  })
  afterAll(async () => {
    upstream?.release()
    await gateway?.close()
    await upstream?.close()
  })

  it('gives a slot back when its client goes away', async () => {
    const controller = new AbortController()
    const gone = answer(`${gateway.url}/one`, { signal: controller.signal }).catch(() => 'aborted')
    await waitFor(() => upstream.held() === 1, { what: 'the request to hold the slot' })
    expect((await answer(`${gateway.url}/one`)).code).toBe('concurrency_limited')
    controller.abort()
    expect(await gone).toBe('aborted')
    await waitFor(() => upstream.held() === 0, { what: 'the upstream request to be aborted' })
    const next = answer(`${gateway.url}/one`)
    await waitFor(() => upstream.held() === 1, { what: 'the next request to get the slot' })
    upstream.release()
    expect((await next).status).toBe(200)
  })

  it('queues over the limit instead of refusing, one at a time', async () => {
    const queuedUpstream = await holdingUpstream()
    const queued = await startGateway({ 'r.yaml': limitedRoute('queued', queuedUpstream.url, '{ limit: 1, queue: { size: 5, timeout: 5s } }') })
    try {
      const answers = Array.from({ length: 3 }, () => answer(`${queued.url}/queued`))
      await waitFor(() => queuedUpstream.held() === 1, { what: 'the first request' })
      queuedUpstream.release()
      expect((await Promise.all(answers)).map((r) => r.status)).toEqual([200, 200, 200])
      expect(queuedUpstream.most()).toBe(1)
      expect(queuedUpstream.requests).toHaveLength(3)
    } finally {
      await queued.close()
      await queuedUpstream.close()
    }
  })
})
