import { get as httpGet, type IncomingMessage, type ServerResponse } from 'node:http'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { startGateway, type TestGateway } from '../../support/gateway.js'
import { answer } from '../../support/http.js'
import { waitFor } from '../../support/poll.js'
import { routeFile } from '../../support/routes.js'
import { startUpstream } from '../../support/upstream.js'

/** What the test upstream answers for a path: its status, headers and body; `truncate` cuts the body short. */
interface Behaviour {
  status?: number
  headers?: Record<string, string | string[]>
  body?: string
  truncate?: boolean
  delayMs?: number
  /** The body is built from this request header as the upstream got it (an answer that depends on it). */
  builtFrom?: string
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
      const body = b.builtFrom !== undefined ? `built for ${String(req.headers[b.builtFrom])}` : b.body ?? `body of ${req.url} (${req.headers['accept-language'] ?? '-'}, ${req.headers.accept ?? '-'})`
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
    { name: 'a request with Cookie under the route ttl (the answer may be that user\'s)', path: '/with-cookie', behaviour: {}, headers: { cookie: 'session=1' }, kept: false },
    { name: 'a request with Cookie whose answer says public, max-age', path: '/cookie-public', behaviour: { headers: { 'cache-control': 'public, max-age=60' } }, headers: { cookie: 'session=1' }, kept: true },
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

  it('keys entries by the Host the client sent: an answer built from it never reaches a client that sent another', async () => {
    upstream.set('/by-host', { builtFrom: 'x-forwarded-host', headers: { 'cache-control': 'public, max-age=60' } })
    const host = new URL(gateway.url).host
    const poisoned = await get('/by-host', { host: 'evil.example' })
    expect(poisoned.text).toBe('built for evil.example')
    const honest = await get('/by-host')
    expect(honest.text).toBe(`built for ${host}`)
    expect(cacheStatus(honest)).not.toContain('hit')
    expect(cacheStatus(await get('/by-host', { host: 'evil.example' }))).toBe('Portico; hit')
  })

  it('splits variants on the headers as forwarded: Vary: X-Forwarded-For is per client address, which no client sent', async () => {
    upstream.set('/by-client', { builtFrom: 'x-forwarded-for', headers: { 'cache-control': 'public, max-age=60', vary: 'X-Forwarded-For' } })
    // Two clients on two loopback addresses (undici's connector takes no local address; node's client does).
    const from = (localAddress: string) =>
      new Promise<{ text: string; headers: Record<string, unknown> }>((resolve, reject) => {
        httpGet(`${gateway.url}/c/by-client`, { localAddress, agent: false }, (res) => {
          let text = ''
          res.on('data', (chunk: Buffer) => (text += chunk.toString()))
          res.on('end', () => resolve({ text, headers: res.headers }))
        }).on('error', reject)
      })
    expect((await from('127.0.0.1')).text).toBe('built for 127.0.0.1')
    const other = await from('127.0.0.2')
    expect(other.text).toBe('built for 127.0.0.2')
    expect(cacheStatus(other)).not.toContain('hit')
    expect(cacheStatus(await from('127.0.0.1'))).toBe('Portico; hit')
  })

  it('reads repeated Cache-Control and Vary headers as one list each', async () => {
    upstream.set('/repeated', { headers: { 'cache-control': ['public', 'max-age=60'], vary: ['Accept-Language', 'Accept-Encoding'] } })
    const first = await get('/repeated', { 'accept-language': 'en' })
    const second = await get('/repeated', { 'accept-language': 'en' })
    const other = await get('/repeated', { 'accept-language': 'fr' })
    expect([first.status, second.status, other.status]).toEqual([200, 200, 200])
    expect([cacheStatus(second), cacheStatus(other)]).toEqual(['Portico; hit', 'Portico; fwd=miss'])
    expect(upstream.count('/repeated')).toBe(2)
  })

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

  it('never keeps a body the client abandoned halfway', async () => {
    let served = 0
    let closed = 0
    const slow = await startUpstream('slow', (_req, res) => {
      served++
      res.writeHead(200, { 'content-length': String(2 * 65536) })
      res.write(Buffer.alloc(65536, 97))
      const rest = setTimeout(() => res.end(Buffer.alloc(65536, 98)), 500)
      res.on('close', () => {
        clearTimeout(rest)
        closed++
      })
    })
    const abandoning = await startGateway({ 'a.yaml': routeFile('a', '/a', slow.url, 'cache: {}') })
    try {
      await new Promise<void>((resolve, reject) => {
        const req = httpGet(`${abandoning.url}/a/x`, (res) => res.once('data', () => (req.destroy(), resolve())))
        req.on('error', () => undefined)
        setTimeout(() => reject(new Error('no first chunk')), 5_000)
      })
      await waitFor(() => closed === 1, { what: 'the upstream response to be given up' })
      const whole = await answer(`${abandoning.url}/a/x`)
      expect(whole.text).toHaveLength(2 * 65536)
      expect(served).toBe(2)
    } finally {
      await abandoning.close()
      await slow.close()
    }
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
    // a path given twice is refused, and purges nothing
    const twice = await answer(`${gateway.adminUrl}/admin/cache/c?path=/c/p1&path=/c/p2`, { method: 'DELETE', headers: auth })
    expect([twice.status, twice.code]).toEqual([400, 'bad_request'])
    await Promise.all([get('/p1'), get('/p2')])
    expect([upstream.count('/p1'), upstream.count('/p2')]).toEqual([3, 2])
  })
})

/** A sample's value from the admin port's /metrics, 0 when absent. */
async function metric(adminUrl: string, name: string, labels: string): Promise<number> {
  const text = (await answer(`${adminUrl}/metrics`)).text
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`))
  return line ? Number(line.split(' ').at(-1)) : 0
}

describe('a cache behind a trusted proxy', () => {
  let upstream: Awaited<ReturnType<typeof scriptedUpstream>>
  let gateway: TestGateway
  beforeAll(async () => {
    upstream = await scriptedUpstream()
    gateway = await startGateway({ 'c.yaml': routeFile('c', '/c', upstream.url, 'rewritePrefix: /', 'cache: { ttl: 30s }') }, { 'trust-proxy': 'true' })
  })
  afterAll(async () => {
    await gateway?.close()
    await upstream?.close()
  })
  const get = (path: string, headers: Record<string, string>) => answer(`${gateway.url}/c${path}`, { headers })

  it('keys entries by the forwarded Host and scheme the proxy passed on', async () => {
    upstream.set('/fwd-host', { builtFrom: 'x-forwarded-host' })
    expect((await get('/fwd-host', { 'x-forwarded-host': 'a.example' })).text).toBe('built for a.example')
    expect((await get('/fwd-host', { 'x-forwarded-host': 'b.example' })).text).toBe('built for b.example')
    expect(cacheStatus(await get('/fwd-host', { 'x-forwarded-host': 'a.example' }))).toBe('Portico; hit')
    upstream.set('/fwd-proto', { builtFrom: 'x-forwarded-proto' })
    expect((await get('/fwd-proto', { 'x-forwarded-proto': 'https' })).text).toBe('built for https')
    expect((await get('/fwd-proto', { 'x-forwarded-proto': 'http' })).text).toBe('built for http')
    expect(upstream.count('/fwd-host') + upstream.count('/fwd-proto')).toBe(4)
  })
})

describe('a cache and the other policies', () => {
  let upstream: Awaited<ReturnType<typeof scriptedUpstream>>
  let gateway: TestGateway
  beforeAll(async () => {
    upstream = await scriptedUpstream()
    gateway = await startGateway({
      'limited.yaml': routeFile('limited', '/limited', upstream.url, 'cache: {}', 'rateLimit: { limit: 2, window: 1m }'),
      'broken.yaml': routeFile('broken', '/broken', upstream.url, 'cache: { staleIfError: 1m }', 'circuitBreaker: { volumeThreshold: 2, errorThresholdPercentage: 50, resetTimeout: 1h }'),
      'small.yaml': routeFile('small', '/small', upstream.url, 'cache: { maxSize: 64kb, maxEntrySize: 8kb }'),
      'swr.yaml': routeFile('swr', '/swr', upstream.url, 'cache: { staleWhileRevalidate: 1m }'),
      'lonely.yaml': routeFile('lonely', '/lonely', upstream.url, 'cache: { staleIfError: 1m }'),
    })
  })
  afterAll(async () => {
    await gateway?.close()
    await upstream?.close()
  })

  it('counts a hit against the rate limit (a hit is a request)', async () => {
    const statuses = []
    for (let i = 0; i < 3; i++) statuses.push((await answer(`${gateway.url}/limited/x`)).status)
    expect(statuses).toEqual([200, 200, 429])
    expect(upstream.count('/limited/x')).toBe(1)
  })

  it('answers the stale entry while the breaker is open, which a hit does not go through', async () => {
    upstream.set('/broken/x', { headers: { 'cache-control': 'max-age=1' }, body: 'kept' })
    await answer(`${gateway.url}/broken/x`)
    upstream.set('/broken/x', { status: 503 })
    // the 503s count against the breaker: it opens, and the entry keeps answering
    await waitFor(
      async () => {
        await answer(`${gateway.url}/broken/x`)
        return (await metric(gateway.adminUrl, 'portico_circuit_breaker_state', 'route="broken"')) === 2
      },
      { timeoutMs: 10_000, what: 'the breaker to open' },
    )
    const upstreamBefore = upstream.count('/broken/x')
    const whileOpen = await answer(`${gateway.url}/broken/x`)
    expect(whileOpen).toMatchObject({ status: 200, text: 'kept' })
    expect(cacheStatus(whileOpen)).toBe('Portico; hit; detail=stale')
    expect(upstream.count('/broken/x')).toBe(upstreamBefore)
    expect(await metric(gateway.adminUrl, 'portico_cache_stale_served_total', 'route="broken",reason="on_error"')).toBeGreaterThan(0)
  })

  it('answers the stale entry within staleIfError when no instance is left to ask', async () => {
    // stale on arrival (Age past max-age), within the window
    upstream.set('/lonely/x', { headers: { 'cache-control': 'max-age=50', age: '100' }, body: 'kept' })
    await answer(`${gateway.url}/lonely/x`)
    const eject = await answer(`${gateway.adminUrl}/admin/routes/lonely/instances/${encodeURIComponent(upstream.url)}/eject`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
    expect(eject.status).toBe(200)
    const answered = await answer(`${gateway.url}/lonely/x`)
    expect(answered).toMatchObject({ status: 200, text: 'kept' })
    expect(cacheStatus(answered)).toBe('Portico; hit; detail=stale')
    expect(upstream.count('/lonely/x')).toBe(1)
  })

  it('answers the stale entry within staleWhileRevalidate while one request revalidates it', async () => {
    // stale on arrival (Age past max-age), within the window
    upstream.set('/swr/x', { headers: { 'cache-control': 'max-age=50', age: '100' }, body: 'old' })
    await answer(`${gateway.url}/swr/x`)
    upstream.set('/swr/x', { headers: { 'cache-control': 'max-age=60' }, body: 'new', delayMs: 300 })
    const revalidating = answer(`${gateway.url}/swr/x`)
    await waitFor(() => upstream.count('/swr/x') === 2, { what: 'the revalidation to reach the upstream' })
    const meanwhile = await answer(`${gateway.url}/swr/x`)
    expect(meanwhile.text).toBe('old')
    expect(cacheStatus(meanwhile)).toBe('Portico; hit; detail=stale')
    expect((await revalidating).text).toBe('new')
    expect(cacheStatus(await answer(`${gateway.url}/swr/x`))).toBe('Portico; hit')
    expect(upstream.count('/swr/x')).toBe(2)
  })

  it('keeps the memory store within maxSize under a stream of distinct keys, the least recently used going first', async () => {
    upstream.set('/small/any', {})
    for (let i = 0; i < 60; i++) {
      upstream.set(`/small/${i}`, { body: String(i).padEnd(4096, '.') })
      await answer(`${gateway.url}/small/${i}`)
    }
    const bytes = await metric(gateway.adminUrl, 'portico_cache_bytes', 'route="small"')
    expect(bytes).toBeGreaterThan(32 * 1024)
    expect(bytes).toBeLessThanOrEqual(64 * 1024)
    expect(await metric(gateway.adminUrl, 'portico_cache_evictions_total', 'route="small",reason="evicted"')).toBeGreaterThan(40)
    // the newest are still there, the oldest are not
    expect(cacheStatus(await answer(`${gateway.url}/small/59`))).toBe('Portico; hit')
    expect(cacheStatus(await answer(`${gateway.url}/small/0`))).not.toBe('Portico; hit')
  })
})

describe('a cache in Redis shared by three replicas', () => {
  const redisUrl = inject('redisUrl')
  const route = `shared-${process.pid}`
  let upstream: Awaited<ReturnType<typeof scriptedUpstream>>
  let replicas: TestGateway[]
  let redis: Redis
  beforeAll(async () => {
    upstream = await scriptedUpstream()
    redis = new Redis(redisUrl)
    const files = {
      'shared.yaml': routeFile(route, `/${route}`, upstream.url, 'rewritePrefix: /', 'cache: { store: redis }'),
      'local.yaml': routeFile(`${route}-mem`, `/${route}-mem`, upstream.url, 'rewritePrefix: /mem', 'cache: {}'),
    }
    replicas = await Promise.all([0, 1, 2].map(() => startGateway(files, {}, { REDIS_URL: redisUrl })))
  })
  afterAll(async () => {
    await Promise.all((replicas ?? []).map((r) => r.close()))
    await upstream?.close()
    redis?.disconnect()
  })
  // Clients reach the fleet under one name (a load balancer's); the Host is in the key, so not each replica's own port.
  const at = (i: number, path: string, headers: Record<string, string> = {}) => answer(`${replicas[i % 3]!.url}/${route}${path}`, { headers: { host: 'api.example', ...headers } })

  it('makes one upstream request for 50 concurrent misses of one key across the fleet', async () => {
    upstream.set('/stampede', { delayMs: 300, body: 'fetched once' })
    const all = await Promise.all(Array.from({ length: 50 }, (_, i) => at(i, '/stampede')))
    expect(all.map((r) => r.status)).toEqual(Array(50).fill(200))
    expect(new Set(all.map((r) => r.text))).toEqual(new Set(['fetched once']))
    expect(upstream.count('/stampede')).toBe(1)
  })

  it('answers from the entry another replica stored', async () => {
    upstream.set('/elsewhere', {})
    await at(0, '/elsewhere')
    const others = await Promise.all([at(1, '/elsewhere'), at(2, '/elsewhere')])
    expect(others.map(cacheStatus)).toEqual(['Portico; hit', 'Portico; hit'])
    expect(upstream.count('/elsewhere')).toBe(1)
  })

  it('takes junk at an entry\'s key for a miss, and replaces it', async () => {
    upstream.set('/junk', {})
    await at(0, '/junk')
    const keys = await redis.keys(`portico:cache:{${route}}:*`)
    expect(keys.length).toBeGreaterThan(0)
    await Promise.all(keys.map((key) => redis.set(key, Buffer.from([0, 0, 0, 9, 0x7b, 0x22, 0xff, 0x00]))))
    const after = await at(1, '/junk')
    expect(after.status).toBe(200)
    expect(upstream.count('/junk')).toBe(2)
    expect(cacheStatus(await at(2, '/junk'))).toBe('Portico; hit')
  })

  it('takes an entry whose stored policy CachePolicy could not read for a miss, and lives through it', async () => {
    upstream.set('/crafted', { headers: { vary: 'Accept-Language' } })
    await at(0, '/crafted', { 'accept-language': 'en' })
    const keys = await redis.keys(`portico:cache:{${route}}:*`)
    let crafted = 0
    for (const key of keys) {
      const value = await redis.getBuffer(key)
      if (!value || value.length < 4) continue
      const length = value.readUInt32BE(0)
      let meta: { kind?: string; policy?: { resh: Record<string, unknown> } }
      try {
        meta = JSON.parse(value.subarray(4, 4 + length).toString()) as typeof meta
      } catch {
        continue // the junk of the test before, or a lock
      }
      if (meta.kind !== 'response' || !meta.policy) continue
      // valid JSON of the right kind, but a list where CachePolicy splits a string
      meta.policy.resh.vary = ['accept-language']
      const json = Buffer.from(JSON.stringify(meta))
      const head = Buffer.alloc(4)
      head.writeUInt32BE(json.length)
      await redis.set(key, Buffer.concat([head, json, value.subarray(4 + length)]))
      crafted++
    }
    expect(crafted).toBeGreaterThan(0)
    const before = upstream.count('/crafted')
    const answers = await Promise.all([at(1, '/crafted', { 'accept-language': 'en' }), at(2, '/crafted', { 'accept-language': 'en' })])
    expect(answers.map((a) => a.status)).toEqual([200, 200])
    expect(upstream.count('/crafted')).toBeGreaterThan(before)
    expect(cacheStatus(await at(0, '/crafted', { 'accept-language': 'en' }))).toBe('Portico; hit')
  })

  it('purges on every replica: the Redis store once, each replica\'s memory store through Redis', async () => {
    upstream.set('/purged', {})
    upstream.set('/mem/purged', {})
    const mem = (i: number) => answer(`${replicas[i]!.url}/${route}-mem/purged`, { headers: { host: 'api.example' } })
    await Promise.all([at(0, '/purged'), mem(0), mem(1), mem(2)])
    expect(upstream.count('/mem/purged')).toBeLessThanOrEqual(3)
    const memBefore = upstream.count('/mem/purged')
    expect((await answer(`${replicas[0]!.adminUrl}/admin/cache/${route}?path=/${route}/purged`, { method: 'DELETE' })).status).toBe(200)
    expect((await answer(`${replicas[0]!.adminUrl}/admin/cache/${route}-mem`, { method: 'DELETE' })).status).toBe(200)
    await at(2, '/purged')
    expect(upstream.count('/purged')).toBe(2)
    await waitFor(async () => cacheStatus(await mem(2)) !== 'Portico; hit' && cacheStatus(await mem(1)) !== 'Portico; hit', { timeoutMs: 5_000, what: 'the other replicas to drop their memory entries' })
    expect(upstream.count('/mem/purged')).toBeGreaterThan(memBefore)
  })
})
