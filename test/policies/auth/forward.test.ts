import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startGateway, type TestGateway } from '../../support/gateway.js'
import { routeFile } from '../../support/routes.js'
import { startUpstream, type Upstream } from '../../support/upstream.js'

const call = (url: string, headers: Record<string, string> = {}) =>
  request(url, { method: 'POST', headers, body: 'payload' }).then(async (r) => ({ status: r.statusCode, headers: r.headers, text: await r.body.text() }))

describe('auth.forward against a real authorization service', () => {
  let authz: Upstream
  let slow: Upstream
  let upstream: Upstream
  let gateway: TestGateway
  beforeAll(async () => {
    // Allows "Bearer good" (naming the user), refuses anything else with its own body and challenge.
    authz = await startUpstream('authz', (req, res) => {
      if (req.headers.authorization === 'Bearer good') return res.writeHead(204, { 'x-user-id': 'u-42', 'x-consumer-name': 'svc', 'x-other': 'kept-out' }).end()
      res.writeHead(403, { 'content-type': 'text/plain', 'www-authenticate': 'Custom realm="authz"' }).end('no entry for you')
    })
    slow = await startUpstream('slow', () => undefined) // never answers
    upstream = await startUpstream('orders')
    gateway = await startGateway({
      'consumers.yaml': 'consumers:\n  - name: svc\n    groups: [internal]\n',
      'f.yaml': routeFile('forwarded', '/forwarded', upstream.url, `auth: { forward: { url: "${authz.url}/check?via=portico", headersToUpstream: [X-User-Id] } }`),
      'deny.yaml': routeFile('deny', '/deny', upstream.url, `auth: { forward: { url: "${slow.url}/check", timeout: 200ms } }`),
      'cached.yaml': routeFile('cached', '/cached', upstream.url, `auth: { forward: { url: "${authz.url}/check", headersToUpstream: [X-User-Id], cacheFor: 1m } }`),
      'allow.yaml': routeFile('allow', '/allow', upstream.url, `auth: { forward: { url: "http://127.0.0.1:1/check", timeout: 200ms, onError: allow } }`),
    })
  })
  afterAll(async () => {
    await gateway?.close()
    await Promise.all([authz?.close(), slow?.close(), upstream?.close()])
  })

  it('asks the service with the request\'s method, path and headers (no body), and passes on the headers it names', async () => {
    const ok = await call(`${gateway.url}/forwarded/items?page=2`, { authorization: 'Bearer good', 'x-user-id': 'spoofed' })
    expect(ok.status).toBe(200)
    const asked = authz.requests.at(-1)
    expect(asked).toMatchObject({ method: 'POST', url: '/check?via=portico', bytes: 0 })
    expect(asked?.headers['x-forwarded-method']).toBe('POST')
    expect(asked?.headers['x-forwarded-uri']).toBe('/forwarded/items?page=2')
    expect(asked?.headers['x-user-id']).toBeUndefined()
    const seen = upstream.requests.at(-1)
    expect([seen?.headers['x-user-id'], seen?.headers['x-consumer-name'], seen?.headers['x-other'], seen?.bytes]).toEqual(['u-42', 'svc', undefined, 7])
  })

  it('returns the service\'s refusal to the client as it came; the upstream never sees the request', async () => {
    const before = upstream.requests.length
    const refused = await call(`${gateway.url}/forwarded/items`, { authorization: 'Bearer bad' })
    expect([refused.status, refused.text, refused.headers['www-authenticate']]).toEqual([403, 'no entry for you', 'Custom realm="authz"'])
    expect(upstream.requests.length).toBe(before)
  })

  it('remembers an allowing answer for cacheFor, keyed by the credentials; a refusal is asked again every time', async () => {
    const asked = () => authz.requests.filter((r) => r.url === '/check').length
    const before = asked()
    for (let i = 0; i < 3; i++) expect((await call(`${gateway.url}/cached/x`, { authorization: 'Bearer good' })).status).toBe(200)
    expect(asked()).toBe(before + 1)
    expect(upstream.requests.at(-1)?.headers['x-user-id']).toBe('u-42')
    for (let i = 0; i < 2; i++) expect((await call(`${gateway.url}/cached/x`, { authorization: 'Bearer bad' })).status).toBe(403)
    expect(asked()).toBe(before + 3)
    expect((await call(`${gateway.url}/cached/x`, { authorization: 'Bearer good', cookie: 'session=other' })).status).toBe(200)
    expect(asked()).toBe(before + 4)
  })

  it('answers 503 auth_unavailable when the service times out with onError: deny, and lets through with allow', async () => {
    const before = upstream.requests.length
    const started = Date.now()
    const denied = await call(`${gateway.url}/deny/x`)
    expect(Date.now() - started).toBeLessThan(2_000)
    expect([denied.status, (JSON.parse(denied.text) as { code: string }).code]).toEqual([503, 'auth_unavailable'])
    expect(upstream.requests.length).toBe(before)
    expect((await call(`${gateway.url}/allow/x`)).status).toBe(200)
    expect(upstream.requests.at(-1)?.headers['x-consumer-name']).toBeUndefined()
  })
})
