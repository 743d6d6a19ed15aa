import type { IncomingMessage, ServerResponse } from 'node:http'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { startGateway, type TestGateway } from '../../support/gateway.js'
import { answer } from '../../support/http.js'
import { waitFor } from '../../support/poll.js'
import { routeFile } from '../../support/routes.js'
import { startUpstream, type Upstream } from '../../support/upstream.js'

/** What the test upstream answers for a path: its status, headers and body; `truncate` cuts the body short. */
interface Behaviour {
  status?: number
  headers?: Record<string, string>
  body?: string
  truncate?: boolean
  delayMs?: number
}

/** An upstream whose answers the test sets per path; it counts the requests each path got and honours If-None-Match. */
async function scriptedUpstream() {
  const behaviours = new Map<string, Behaviour>()
  const hits = new Map<string, number>()
  const upstream = await startUpstream('cached', (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0] as string
    hits.set(path, (hits.get(path) ?? 0) + 1)
    const b = behaviours.get(path) ?? {}
    const send = () => {
      const etag = b.headers?.etag
      if (etag !== undefined && req.headers['if-none-match'] === etag) return void res.writeHead(304, b.headers).end()
      const body = b.body ?? `body of ${req.url} (${req.headers['accept-language'] ?? '-'}, ${req.headers.accept ?? '-'})`
      if (b.truncate) {
        res.writeHead(b.status ?? 200, { ...b.headers, 'content-length': String(body.length + 100) })
        res.write(body)
        return void setTimeout(() => res.socket?.destroy(), 20)
      }
      res.writeHead(b.status ?? 200, { 'content-type': 'text/plain', ...b.headers }).end(body)
    }
    if (b.delayMs) setTimeout(send, b.delayMs)
    else send()
  })
  return Object.assign(upstream, {
    set: (path: string, behaviour: Behaviour) => behaviours.set(path, behaviour),
    count: (path: string) => hits.get(path) ?? 0,
  })
}

const cacheStatus = (r: { headers: Record<string, unknown> }) => String(r.headers['cache-status'] ?? '')

describe('a route with a memory cache', () => {
  let upstream: Awaited<ReturnType<typeof scriptedUpstream>>
  let gateway: TestGateway
  const get = (path: string, headers: Record<string, string> = {}, method = 'GET') => answer(`${gateway.url}/c${path}`, { method: method as 'GET', headers })

  beforeAll(async () => {
    upstream = await scriptedUpstream()
    gateway = await startGateway({
      'c.yaml': routeFile('c', '/c', upstream.url, 'rewritePrefix: /', 'cache: { ttl: 30s, vary: [Accept], maxEntrySize: 1kb, staleIfError: 1m }', 'retry: { attempts: 1 }'),
    })
  })
  afterAll(async () => {
    await gateway?.close()
    await upstream?.close()
  })

  // Each row: the upstream's answer, the request, and whether a second identical request is a hit.
  const rows: { name: string; path: string; behaviour: Behaviour; headers?: Record<string, string>; method?: string; kept: boolean }[] = [
    { name: 'a response that says nothing about caching (the route ttl)', path: '/plain', behaviour: {}, kept: true },
    { name: 'public, max-age', path: '/max-age', behaviour: { headers: { 'cache-control': 'public, max-age=60' } }, kept: true },
    { name: 'a 404', path: '/gone', behaviour: { status: 404 }, kept: true },
    { name: 'a HEAD', path: '/head', behaviour: { body: 'twelve bytes' }, method: 'HEAD', kept: true },
    { name: 'no-store', path: '/no-store', behaviour: { headers: { 'cache-control': 'no-store' } }, kept: false },
    { name: 'private', path: '/private', behaviour: { headers: { 'cache-control': 'private, max-age=60' } }, kept: false },
    { name: 'Set-Cookie', path: '/cookie', behaviour: { headers: { 'set-cookie': 'a=1' } }, kept: false },
    { name: 'a request with Authorization (the response does not say public)', path: '/auth', behaviour: {}, headers: { authorization: 'Bearer x' }, kept: false },
    { name: 'a 500', path: '/error', behaviour: { status: 500 }, kept: false },
    { name: 'a 302', path: '/redirect', behaviour: { status: 302, headers: { location: '/elsewhere' } }, kept: false },
    { name: 'Vary: *', path: '/vary-star', behaviour: { headers: { vary: '*' } }, kept: false },
    { name: 'a body larger than maxEntrySize (streams through)', path: '/large', behaviour: { body: 'x'.repeat(2048) }, kept: false },
  ]
  for (const row of rows) {
    it(`${row.kept ? 'keeps' : 'does not keep'} ${row.name}`, async () => {
      upstream.set(row.path, row.behaviour)
      const first = await get(row.path, row.headers, row.method)
      const second = await get(row.path, row.headers, row.method)
      expect(upstream.count(row.path)).toBe(row.kept ? 1 : 2)
      expect(second.text).toBe(first.text)
      expect(second.status).toBe(first.status)
      expect(second.headers['x-request-id']).not.toBe(first.headers['x-request-id'])
      if (row.kept) {
        // `stored` only where the length was known when the headers went out (HEAD's is the GET's)
        expect(cacheStatus(first)).toBe(first.headers['content-length'] === undefined && row.method !== 'HEAD' ? 'Portico; fwd=miss' : 'Portico; fwd=miss; stored')
        expect(cacheStatus(second)).toBe('Portico; hit')
        expect(second.headers.age).toMatch(/^\d+$/)
        if (row.method === 'HEAD') expect(second.headers['content-length']).toBe(first.headers['content-length'])
        else expect(Number(second.headers['content-length'])).toBe(Buffer.byteLength(second.text))
      } else {
        expect(cacheStatus(second)).toBe('Portico; fwd=miss')
      }
    })
  }

  it('answers If-None-Match from a fresh entry with 304, without the upstream', async () => {
    upstream.set('/etag', { headers: { etag: '"v1"', 'cache-control': 'max-age=60' } })
    await get('/etag')
    const conditional = await get('/etag', { 'if-none-match': 'W/"v1"' })
    expect(conditional.status).toBe(304)
    expect(conditional.text).toBe('')
    expect(conditional.headers.etag).toBe('"v1"')
    expect(upstream.count('/etag')).toBe(1)
  })

  it('revalidates a stale entry with its validators: a 304 upstream refreshes it, the client gets the body', async () => {
    upstream.set('/stale', { headers: { etag: '"s1"', 'cache-control': 'max-age=1' }, body: 'stale-able' })
    await get('/stale')
    await waitFor(async () => cacheStatus(await get('/stale')) !== 'Portico; hit', { timeoutMs: 5_000, what: 'the entry to go stale' })
    const revalidations = upstream.requests.filter((r) => r.url === '/stale' && r.headers['if-none-match'] === '"s1"')
    expect(revalidations).toHaveLength(1)
    const after = await get('/stale')
    expect(after.text).toBe('stale-able')
    expect(cacheStatus(after)).toBe('Portico; hit')
    expect(upstream.count('/stale')).toBe(2)
  })

  it('splits entries by the route\'s vary headers and by the upstream\'s Vary', async () => {
    upstream.set('/vary', { headers: { vary: 'Accept-Language' } })
    const en = await get('/vary', { 'accept-language': 'en' })
    const fr = await get('/vary', { 'accept-language': 'fr' })
    const json = await get('/vary', { 'accept-language': 'fr', accept: 'application/json' })
    expect(new Set([en.text, fr.text, json.text]).size).toBe(3)
    expect(upstream.count('/vary')).toBe(3)
    const again = await Promise.all([get('/vary', { 'accept-language': 'en' }), get('/vary', { 'accept-language': 'fr' }), get('/vary', { 'accept-language': 'fr', accept: 'application/json' })])
    expect(again.map((r) => r.text)).toEqual([en.text, fr.text, json.text])
    expect(again.map(cacheStatus)).toEqual(['Portico; hit', 'Portico; hit', 'Portico; hit'])
    expect(upstream.count('/vary')).toBe(3)
  })

  it('answers a stale entry within staleIfError when the upstream fails, and says so', async () => {
    upstream.set('/fallback', { headers: { 'cache-control': 'max-age=1' }, body: 'good' })
    await get('/fallback')
    upstream.set('/fallback', { status: 503, body: 'down' })
    const stale = await waitFor(async () => {
      const r = await get('/fallback')
      return cacheStatus(r) === 'Portico; hit; detail=stale' ? r : undefined
    }, { timeoutMs: 5_000, what: 'the stale entry instead of the 503' })
    expect(stale.status).toBe(200)
    expect(stale.text).toBe('good')
  })

  it('never keeps a body the upstream cut short', async () => {
    upstream.set('/cut', { truncate: true, body: 'partial' })
    await get('/cut').catch(() => undefined)
    await get('/cut').catch(() => undefined)
    expect(upstream.count('/cut')).toBe(2)
  })

  it('makes one upstream request for 20 concurrent misses of one key', async () => {
    upstream.set('/busy', { delayMs: 200, body: 'once' })
    const all = await Promise.all(Array.from({ length: 20 }, () => get('/busy')))
    expect(all.every((r) => r.status === 200 && r.text === 'once')).toBe(true)
    expect(upstream.count('/busy')).toBe(1)
    expect(all.filter((r) => cacheStatus(r) === 'Portico; hit; collapsed')).toHaveLength(19)
  })

  it('lets a purge drop one path or the whole route', async () => {
    upstream.set('/p1', {})
    upstream.set('/p2', {})
    await Promise.all([get('/p1'), get('/p2')])
    const auth = { authorization: 'Bearer none' }
    const purgeOne = await answer(`${gateway.adminUrl}/admin/cache/c?path=/c/p1`, { method: 'DELETE', headers: auth })
    expect(purgeOne.status).toBe(200)
    expect(JSON.parse(purgeOne.text)).toMatchObject({ route: 'c', path: '/c/p1', purged: 1 })
    await Promise.all([get('/p1'), get('/p2')])
    expect([upstream.count('/p1'), upstream.count('/p2')]).toEqual([2, 1])
    await answer(`${gateway.adminUrl}/admin/cache/c`, { method: 'DELETE', headers: auth })
    await Promise.all([get('/p1'), get('/p2')])
    expect([upstream.count('/p1'), upstream.count('/p2')]).toEqual([3, 2])
    expect((await answer(`${gateway.adminUrl}/admin/cache/nope`, { method: 'DELETE' })).code).toBe('not_found')
  })
})
