import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseRouteFile } from '../../../src/config/parse-route-file.js'
import { startGateway, type TestGateway } from '../../support/gateway.js'
import { routeFile } from '../../support/routes.js'
import { startUpstream, type Upstream } from '../../support/upstream.js'

const TRANSFORMS = 'responseHeaders: { set: { Strict-Transport-Security: "max-age=31536000", X-Served-For: "${requestId}" }, add: { X-Tags: edge }, remove: [Server, X-Powered-By] }'

describe('responseHeaders: header transforms on the way out, on every answer', () => {
  let upstream: Upstream
  let gateway: TestGateway
  beforeAll(async () => {
    upstream = await startUpstream('u', (_req, res) => res.writeHead(200, { server: 'secret-stack/1.2', 'x-powered-by': 'php', 'x-tags': 'upstream', 'strict-transport-security': 'max-age=0', 'cache-control': 'max-age=60' }).end('ok'))
    gateway = await startGateway({
      'shaped.yaml': routeFile('shaped', '/shaped', upstream.url, TRANSFORMS),
      'cached.yaml': routeFile('cached', '/cached', upstream.url, TRANSFORMS, 'cache: { ttl: 1m }'),
      'guarded.yaml': routeFile('guarded', '/guarded', upstream.url, TRANSFORMS, 'auth: { apiKey: {} }'),
    })
  })
  afterAll(async () => {
    await gateway?.close()
    await upstream?.close()
  })

  const get = async (path: string) => {
    const r = await request(`${gateway.url}${path}`)
    await r.body.dump()
    return { status: r.statusCode, headers: r.headers }
  }

  it('sets, appends to and removes the upstream\'s headers', async () => {
    const { status, headers } = await get('/shaped/x')
    expect(status).toBe(200)
    expect(headers).toMatchObject({ 'strict-transport-security': 'max-age=31536000', 'x-tags': 'upstream, edge', 'x-served-for': headers['x-request-id'] })
    expect([headers.server, headers['x-powered-by']]).toEqual([undefined, undefined])
  })

  it('shapes each cache hit for its own request, the stored answer keeping the upstream\'s headers', async () => {
    const first = await get('/cached/x')
    const hit = await get('/cached/x')
    expect(String(hit.headers['cache-status'])).toContain('hit')
    expect(hit.headers['x-served-for']).toBe(hit.headers['x-request-id'])
    expect(hit.headers['x-served-for']).not.toBe(first.headers['x-served-for'])
    expect([hit.headers['x-tags'], hit.headers.server, hit.headers['strict-transport-security']]).toEqual(['upstream, edge', undefined, 'max-age=31536000'])
  })

  it('shapes the gateway\'s own refusals too', async () => {
    const refused = await get('/guarded/x')
    expect(refused.status).toBe(401)
    expect(refused.headers['strict-transport-security']).toBe('max-age=31536000')
    expect(refused.headers['x-tags']).toBe('edge')
  })

  it('refuses, with its line, a header that is the gateway\'s own', () => {
    const { errors } = parseRouteFile('r.yaml', routeFile('r', '/r', 'http://127.0.0.1:1', 'responseHeaders: { set: { Content-Length: "0" } }'))
    expect(errors.map((e) => [e.line, e.message])).toEqual([[2, 'route "r": responseHeaders.set: Content-Length is the gateway\'s to send and cannot be set']])
  })
})
