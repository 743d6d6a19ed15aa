import { createHash } from 'node:crypto'
import { request } from 'undici'
import WebSocket from 'ws'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseRouteFile } from '../../../src/config/parse-route-file.js'
import { startGateway, type TestGateway } from '../../support/gateway.js'
import { routeFile } from '../../support/routes.js'
import { startUpstream, type Upstream } from '../../support/upstream.js'

const TRANSFORMS = `requestHeaders: { set: { X-Gateway: portico, X-Trace: "\${route}/\${requestId}", X-Tenant: "t-\${header:X-Tenant}" }, add: { X-Tags: edge }, remove: [X-Debug, Cookie] }`

const CALLER = 'requestHeaders: { set: { X-Caller: "c=${consumer}" } }\n    responseHeaders: { set: { X-Served-For: "${consumer}" } }'

describe('requestHeaders: header transforms on the way in, against a real upstream', () => {
  let upstream: Upstream
  let failing: Upstream
  let sockets: Upstream
  let gateway: TestGateway
  beforeAll(async () => {
    upstream = await startUpstream('u')
    failing = await startUpstream('failing', (_req, res) => res.writeHead(503).end())
    sockets = await startUpstream('ws', undefined, { websocket: true })
    gateway = await startGateway({
      'r.yaml': routeFile('shaped', '/shaped', upstream.url, TRANSFORMS),
      'retry.yaml': routeFile('retried', '/retried', [failing.url, upstream.url], 'requestHeaders: { set: { X-Gateway: portico } }', 'retry: { attempts: 2, on: [503] }', 'loadBalancer: round-robin'),
      'ws.yaml': routeFile('tunnel', '/tunnel', sockets.url, 'websocket: true', 'requestHeaders: { set: { X-Gateway: portico }, remove: [X-Debug] }'),
      'consumers.yaml': `consumers:\n  - name: acme\n    apiKeys: [sha256:${createHash('sha256').update('pk_acme').digest('hex')}]\n`,
      'keyed.yaml': routeFile('keyed', '/keyed', upstream.url, 'auth: { apiKey: {} }', CALLER),
      'open.yaml': routeFile('open', '/open', upstream.url, CALLER),
      'cache.yaml': routeFile('cached', '/cached', upstream.url, 'requestHeaders: { set: { X-Tenant: "\${header:X-Tenant}" } }', 'cache: { ttl: 1m }'),
    })
  })
  afterAll(async () => {
    await gateway?.close()
    await upstream?.close()
    await failing?.close()
    await sockets?.close()
  })

  const lastSeen = (server: Upstream) => server.requests.at(-1)?.headers ?? {}

  it('sets, appends and removes after the forwarding headers; the client cannot override a set header', async () => {
    const sent = await request(`${gateway.url}/shaped/x`, { headers: { 'x-gateway': 'spoofed', 'x-debug': '1', cookie: 'a=b', 'x-tags': 'client', 'x-tenant': 'acme' } })
    await sent.body.dump()
    const id = sent.headers['x-request-id'] as string
    const seen = lastSeen(upstream)
    expect(seen['x-gateway']).toBe('portico')
    expect(seen['x-trace']).toBe(`shaped/${id}`)
    expect(seen['x-tenant']).toBe('t-acme')
    expect(seen['x-tags']).toBe('client, edge')
    expect(seen['x-debug']).toBeUndefined()
    expect(seen.cookie).toBeUndefined()
    // the gateway's own forwarding headers are still there
    expect(seen['x-forwarded-for']).toBe('127.0.0.1')
    const bare = await request(`${gateway.url}/shaped/y`)
    await bare.body.dump()
    expect([lastSeen(upstream)['x-tags'], lastSeen(upstream)['x-tenant']]).toEqual(['edge', 't-'])
  })

  it('fills ${consumer} with who auth let through, on the way in and out; empty on a route without auth', async () => {
    const keyed = await request(`${gateway.url}/keyed/x`, { headers: { 'x-api-key': 'pk_acme', 'x-caller': 'spoofed' } })
    await keyed.body.dump()
    expect([keyed.statusCode, lastSeen(upstream)['x-caller'], keyed.headers['x-served-for']]).toEqual([200, 'c=acme', 'acme'])
    const anonymous = await request(`${gateway.url}/open/x`, { headers: { 'x-caller': 'spoofed' } })
    await anonymous.body.dump()
    expect([anonymous.statusCode, lastSeen(upstream)['x-caller'], anonymous.headers['x-served-for']]).toEqual([200, 'c=', ''])
  })

  it('sends the transformed headers on every attempt, a retry\'s too', async () => {
    const before = [failing.requests.length, upstream.requests.length]
    for (let i = 0; i < 2; i++) expect((await request(`${gateway.url}/retried/z`, { headers: { 'x-gateway': 'spoofed' } }).then(async (r) => (await r.body.dump(), r.statusCode)))).toBe(200)
    const attempts = [...failing.requests.slice(before[0]), ...upstream.requests.slice(before[1])]
    expect(attempts.length).toBeGreaterThanOrEqual(3)
    expect(attempts.map((a) => a.headers['x-gateway'])).toEqual(attempts.map(() => 'portico'))
  })

  it('transforms a WebSocket handshake as it does a request', async () => {
    const socket = new WebSocket(`${gateway.url.replace('http', 'ws')}/tunnel`, { headers: { 'x-gateway': 'spoofed', 'x-debug': '1' } })
    const hello = await new Promise<{ headers: Record<string, string> }>((resolve, reject) => {
      socket.once('message', (data: Buffer) => resolve(JSON.parse(data.toString()) as { headers: Record<string, string> }))
      socket.once('error', reject)
    })
    socket.close()
    expect([hello.headers['x-gateway'], hello.headers['x-debug']]).toEqual(['portico', undefined])
  })

  it('keys the route\'s cache on what it sent: one tenant\'s answer never reaches another', async () => {
    const before = upstream.requests.length
    for (const tenant of ['a', 'b', 'a', 'b']) await (await request(`${gateway.url}/cached/page`, { headers: { 'x-tenant': tenant } })).body.dump()
    expect(upstream.requests.slice(before).map((r) => r.headers['x-tenant'])).toEqual(['a', 'b'])
  })
})

describe('requestHeaders in a route file', () => {
  const errorsOf = (extra: string) => parseRouteFile('r.yaml', routeFile('r', '/r', 'http://127.0.0.1:9', extra)).errors.map((e) => `${e.line}: ${e.message}`)

  it('refuses what a transform may not touch, unknown variables and line breaks, with the line', () => {
    expect(errorsOf('requestHeaders: { set: { Host: evil.example } }')).toEqual(['2: route "r": requestHeaders.set: Host is the gateway\'s to send and cannot be set'])
    expect(errorsOf('requestHeaders: { remove: [Content-Length] }')).toEqual(['2: route "r": requestHeaders.remove: content-length is the gateway\'s to send and cannot be removed'])
    expect(errorsOf('requestHeaders: { add: { Transfer-Encoding: gzip } }')[0]).toContain('Transfer-Encoding is the gateway\'s to send')
    expect(errorsOf('requestHeaders: { set: { X-A: "${secret}" } }')).toEqual(['2: route "r": requestHeaders.set.X-A: ${secret} is not a variable (there are ${requestId}, ${clientIp}, ${route}, ${consumer} and ${header:Name})'])
    expect(errorsOf('requestHeaders: { set: { X-A: "a\\r\\nInjected: 1" } }')).toEqual(['5: routes[0].requestHeaders.set.X-A: "a\\r\\nInjected: 1" must be visible ASCII (no line breaks)'])
    expect(errorsOf('requestHeaders: { set: { "Bad Name": x } }')).toEqual(['5: routes[0].requestHeaders.set: "Bad Name" is not a header name'])
    expect(errorsOf('requestHeaders: { set: { X-A: a }, remove: [x-a] }')).toEqual(['2: route "r": requestHeaders: x-a is named in more than one of set, add and remove'])
    expect(errorsOf('requestHeaders: { set: { X-A: ok } }')).toEqual([])
  })
})
