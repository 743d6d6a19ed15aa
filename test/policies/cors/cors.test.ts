import { createHash } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Browser } from 'playwright-core'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseRouteFile } from '../../../src/config/parse-route-file.js'
import { launchChromium } from '../../support/browser.js'
import { startGateway, type TestGateway } from '../../support/gateway.js'
import { routeFile } from '../../support/routes.js'
import { startUpstream, type Upstream } from '../../support/upstream.js'

/** A site of its own origin (127.0.0.1 on another port) serving one empty page. */
async function startSite(): Promise<{ origin: string; close(): Promise<void> }> {
  const server: Server = createServer((_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>site</title>'))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => new Promise<void>((resolve) => server.close(() => resolve())) }
}

describe('cors: a page on another origin calls the API, in a real browser and over raw requests', () => {
  let upstream: Upstream
  let gateway: TestGateway
  let app: Awaited<ReturnType<typeof startSite>>
  let other: Awaited<ReturnType<typeof startSite>>
  let browser: Browser
  beforeAll(async () => {
    // The upstream sends CORS headers of its own: the route's must win.
    upstream = await startUpstream('api', (req, res) => res.writeHead(200, { 'content-type': 'application/json', 'x-internal': 'not exposed', 'access-control-allow-origin': '*', vary: 'Accept-Encoding' }).end(JSON.stringify({ method: req.method })))
    ;[app, other] = [await startSite(), await startSite()]
    gateway = await startGateway({
      'consumers.yaml': `consumers:\n  - name: web\n    apiKeys: [sha256:${createHash('sha256').update('pk_web').digest('hex')}]\n`,
      'api.yaml': routeFile(
        'api',
        '/api',
        upstream.url,
        'methods: [GET, PUT]',
        `cors: { origins: ["${app.origin}", "https://*.example.com"], methods: [GET, PUT], headers: [Content-Type, X-Token, X-API-Key], exposeHeaders: [X-Request-Id], credentials: true, maxAge: 10m }`,
        'auth: { apiKey: {} }',
      ),
      'cached.yaml': routeFile('cached', '/cached', upstream.url, `cors: { origins: ["${app.origin}", "https://*.example.com"] }`, 'cache: { ttl: 1m }'),
    })
    browser = await launchChromium()
  })
  afterAll(async () => {
    await browser?.close()
    await gateway?.close()
    await Promise.all([upstream?.close(), app?.close(), other?.close()])
  })

  const fetchFrom = async (origin: string, script: string) => {
    const page = await browser.newPage()
    try {
      await page.goto(origin)
      return await page.evaluate(script)
    } finally {
      await page.close()
    }
  }

  it('lets a listed origin\'s page send a preflighted PUT and read the answer, an exposed header, and the gateway\'s own refusal', async () => {
    const put = (key: string) =>
      fetchFrom(
        app.origin,
        `fetch('${gateway.url}/api/items', { method: 'PUT', credentials: 'include', headers: { 'content-type': 'application/json', 'x-token': 't'${key ? `, 'x-api-key': '${key}'` : ''} }, body: '{}' })
          .then(async (r) => ({ status: r.status, id: r.headers.get('x-request-id'), internal: r.headers.get('x-internal'), body: await r.text() }), (e) => ({ error: String(e) }))`,
      )
    const before = upstream.requests.length
    // X-Request-Id is exposed (the gateway's id), X-Internal is not: the page reads one and not the other.
    expect(await put('pk_web')).toEqual({ status: 200, id: expect.stringMatching(/^[0-9a-f-]{36}$/), internal: null, body: '{"method":"PUT"}' })
    // Only the PUT reached the upstream: the browser's preflight was answered by the gateway.
    expect(upstream.requests.slice(before).map((r) => r.method)).toEqual(['PUT'])
    // No key: the preflight passes (it carries none), and the page can read auth's 401.
    expect(await put('')).toMatchObject({ status: 401 })
    expect(upstream.requests.length).toBe(before + 1)
  })

  it('refuses a page of an origin not listed: the browser sees no answer', async () => {
    const result = await fetchFrom(other.origin, `fetch('${gateway.url}/api/items').then((r) => ({ status: r.status }), (e) => ({ error: String(e) }))`)
    expect(result).toEqual({ error: 'TypeError: Failed to fetch' })
  })

  it('answers a preflight itself, with what the route allows, before auth and without an upstream', async () => {
    const before = upstream.requests.length
    const preflight = await request(`${gateway.url}/api/items`, { method: 'OPTIONS', headers: { origin: 'https://shop.example.com', 'access-control-request-method': 'PUT', 'access-control-request-headers': 'x-token' } })
    await preflight.body.dump()
    expect(preflight.statusCode).toBe(204)
    expect(preflight.headers).toMatchObject({
      'access-control-allow-origin': 'https://shop.example.com',
      'access-control-allow-credentials': 'true',
      'access-control-allow-methods': 'GET, PUT',
      'access-control-allow-headers': 'Content-Type, X-Token, X-API-Key',
      'access-control-max-age': '600',
      vary: 'Origin, Access-Control-Request-Method, Access-Control-Request-Headers',
    })
    for (const origin of ['https://a.b.example.com', 'https://example.com', 'http://shop.example.com', 'null']) {
      const refused = await request(`${gateway.url}/api/items`, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'GET' } })
      expect([origin, refused.statusCode, refused.headers['access-control-allow-origin']]).toEqual([origin, 403, undefined])
      await refused.body.dump()
    }
    const plainOptions = await request(`${gateway.url}/api/items`, { method: 'OPTIONS' })
    expect([plainOptions.statusCode, plainOptions.headers.allow]).toEqual([405, 'GET, PUT'])
    await plainOptions.body.dump()
    expect(upstream.requests.length).toBe(before)
  })

  it('sets the route\'s CORS headers on the upstream\'s answer, its own replaced, Origin added to its Vary', async () => {
    const answer = async () => {
      const r = await request(`${gateway.url}/api/items`, { headers: { origin: app.origin, 'x-api-key': 'pk_web' } })
      await r.body.dump()
      return r
    }
    const ok = await answer()
    expect(ok.statusCode).toBe(200)
    expect(ok.headers).toMatchObject({ 'access-control-allow-origin': app.origin, 'access-control-allow-credentials': 'true', 'access-control-expose-headers': 'X-Request-Id', vary: 'Accept-Encoding, Origin' })
    const stranger = await request(`${gateway.url}/api/items`, { headers: { origin: other.origin, 'x-api-key': 'pk_web' } })
    await stranger.body.dump()
    expect([stranger.statusCode, stranger.headers['access-control-allow-origin']]).toEqual([200, undefined])
  })

  it('gives a cache hit the CORS headers of the request it answers, not those of the answer it stored', async () => {
    const get = async (origin?: string) => {
      const r = await request(`${gateway.url}/cached/items`, { headers: origin === undefined ? {} : { origin } })
      await r.body.dump()
      return { allowOrigin: r.headers['access-control-allow-origin'], vary: r.headers.vary, cache: String(r.headers['cache-status'] ?? '') }
    }
    expect(await get(app.origin)).toMatchObject({ allowOrigin: app.origin, vary: 'Accept-Encoding, Origin' })
    expect(await get('https://shop.example.com')).toMatchObject({ allowOrigin: 'https://shop.example.com', vary: 'Accept-Encoding, Origin', cache: expect.stringContaining('hit') })
    expect(await get(other.origin)).toMatchObject({ allowOrigin: undefined, cache: expect.stringContaining('hit') })
    expect(await get()).toMatchObject({ allowOrigin: undefined, vary: 'Accept-Encoding, Origin' })
  })

  it('refuses a wildcard origin with credentials at load time', async () => {
    const { errors } = parseRouteFile('c.yaml', routeFile('c', '/c', 'http://127.0.0.1:1', 'cors: { origins: ["*"], credentials: true }'))
    expect(errors.map((e) => [e.line, e.message])).toEqual([[2, 'route "c": cors: "*" with "credentials: true" would let every site act with the user\'s cookies; list the origins']])
  })
})
