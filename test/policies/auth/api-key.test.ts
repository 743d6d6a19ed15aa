import { createHash } from 'node:crypto'
import { readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import WebSocket from 'ws'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startGateway, type TestGateway } from '../../support/gateway.js'
import { waitFor } from '../../support/poll.js'
import { routeFile } from '../../support/routes.js'
import { startUpstream, type Upstream } from '../../support/upstream.js'

const sha = (key: string) => createHash('sha256').update(key).digest('hex')
const ACME_KEY = 'pk_acme-secret-key'
const BETA_KEY = 'pk_beta-secret-key'
const GAMMA_KEY = 'pk_gamma-secret-key'

const consumersFile = (acmeLimit = 3) => `consumers:
  - name: acme
    groups: [partners, billing]
    apiKeys: [sha256:${sha(ACME_KEY)}]
    rateLimit: { limit: ${acmeLimit}, window: 1m }
  - name: beta
    groups: [staff]
    apiKeys: ["sha256:${sha(BETA_KEY).toUpperCase()}"]
`

const get = async (url: string, headers: Record<string, string> = {}) => {
  const response = await request(url, { headers })
  const text = await response.body.text()
  return { status: response.statusCode, headers: response.headers, text, json: () => JSON.parse(text) as Record<string, unknown> }
}

describe('auth.apiKey and consumers files, against a real upstream', () => {
  let upstream: Upstream
  let sockets: Upstream
  let gateway: TestGateway
  const accessLog = join(tmpdir(), `portico-auth-access-${process.pid}.log`)
  beforeAll(async () => {
    upstream = await startUpstream('orders')
    sockets = await startUpstream('ws', undefined, { websocket: true })
    gateway = await startGateway({
      'tunnel.yaml': routeFile('tunnel', '/tunnel', sockets.url, 'websocket: true', 'auth: { apiKey: {} }'),
      'consumers.yaml': consumersFile(),
      'orders.yaml': routeFile('orders', '/orders', upstream.url, 'auth: { apiKey: { in: "header:X-API-Key" } }'),
      'partners.yaml': routeFile('partners', '/partners', upstream.url, 'auth: { apiKey: {}, groups: [partners] }'),
      'query.yaml': routeFile('query', '/query', upstream.url, 'auth: { apiKey: { in: "query:api_key" } }'),
      'limited.yaml': routeFile('limited', '/limited', upstream.url, 'auth: { apiKey: {} }', 'rateLimit: { key: consumer, limit: 1, window: 1m }'),
    }, {}, { PORTICO_ACCESS_LOG: accessLog })
  })
  afterAll(async () => {
    await gateway?.close()
    await upstream?.close()
    await sockets?.close()
    await rm(accessLog, { force: true })
  })

  it('refuses a request without a key with 401, a problem and a challenge; the upstream never sees it', async () => {
    const before = upstream.requests.length
    const refused = await get(`${gateway.url}/orders/1`)
    expect(refused.status).toBe(401)
    expect(refused.headers['content-type']).toContain('application/problem+json')
    expect(refused.json().code).toBe('unauthorized')
    expect(refused.headers['www-authenticate']).toBe('ApiKey realm="portico", header="x-api-key"')
    const wrong = await get(`${gateway.url}/orders/1`, { 'x-api-key': 'pk_guessed' })
    expect([wrong.status, wrong.json().code, wrong.json().detail]).toEqual([401, 'unauthorized', 'The API key is not valid'])
    expect(upstream.requests.length).toBe(before)
  })

  it('lets a consumer\'s key through with its identity, the key and the client\'s spoofed identity removed', async () => {
    const ok = await get(`${gateway.url}/orders/1`, { 'x-api-key': ACME_KEY, 'x-consumer-name': 'admin', 'x-consumer-groups': 'root' })
    expect(ok.status).toBe(200)
    const seen = upstream.requests.at(-1)?.headers ?? {}
    expect(seen['x-consumer-name']).toBe('acme')
    expect(seen['x-consumer-groups']).toBe('partners, billing')
    expect(seen['x-api-key']).toBeUndefined()
    // A hash written in upper case is the same key.
    expect((await get(`${gateway.url}/orders/1`, { 'x-api-key': BETA_KEY, 'x-consumer-groups': 'partners' })).status).toBe(200)
    expect(upstream.requests.at(-1)?.headers['x-consumer-name']).toBe('beta')
    expect(upstream.requests.at(-1)?.headers['x-consumer-groups']).toBe('staff')
    const id = ok.headers['x-request-id'] as string
    const line = await waitFor(async () => (await readFile(accessLog, 'utf8').catch(() => '')).split('\n').find((l) => l.includes(id)), { what: 'the access log line' })
    expect(JSON.parse(line)).toMatchObject({ route: 'orders', status: 200, consumer: 'acme' })
  })

  it('guards a WebSocket upgrade like a request: refused without a key, the tunnel\'s handshake with the identity and without the key', async () => {
    const open = (headers: Record<string, string>) =>
      new Promise<{ status?: number; headers?: Record<string, string> }>((resolve) => {
        const socket = new WebSocket(`${gateway.url.replace('http', 'ws')}/tunnel`, { headers })
        socket.once('unexpected-response', (_req, res) => resolve({ status: res.statusCode }))
        socket.once('message', (data: Buffer) => {
          socket.close()
          resolve({ headers: (JSON.parse(data.toString()) as { headers: Record<string, string> }).headers })
        })
      })
    expect(await open({})).toEqual({ status: 401 })
    const hello = await open({ 'x-api-key': ACME_KEY, 'x-consumer-name': 'admin' })
    expect([hello.headers?.['x-consumer-name'], hello.headers?.['x-api-key']]).toEqual(['acme', undefined])
  })

  it('answers 403 forbidden to a consumer outside the route\'s groups', async () => {
    const before = upstream.requests.length
    const refused = await get(`${gateway.url}/partners/x`, { 'x-api-key': BETA_KEY })
    expect([refused.status, refused.json().code]).toEqual([403, 'forbidden'])
    expect(String(refused.json().detail)).toContain('"beta"')
    expect(upstream.requests.length).toBe(before)
    expect((await get(`${gateway.url}/partners/x`, { 'x-api-key': ACME_KEY })).status).toBe(200)
  })

  it('takes a key from the query and sends the rest of the query upstream untouched', async () => {
    const ok = await get(`${gateway.url}/query/list?a=1&api_key=${encodeURIComponent(ACME_KEY)}&b=x%20y&b=2`)
    expect(ok.status).toBe(200)
    expect(upstream.requests.at(-1)?.url).toBe('/query/list?a=1&b=x%20y&b=2')
    // Nor does the access log show it.
    const id = ok.headers['x-request-id'] as string
    const line = await waitFor(async () => (await readFile(accessLog, 'utf8').catch(() => '')).split('\n').find((l) => l.includes(id)), { what: 'the access log line' })
    expect(JSON.parse(line)).toMatchObject({ path: '/query/list?a=1&api_key=[redacted]&b=x%20y&b=2', upstreamPath: '/query/list?a=1&b=x%20y&b=2', consumer: 'acme' })
    expect(line).not.toContain('acme-secret')
    expect((await get(`${gateway.url}/query/list?api_key=nope`)).status).toBe(401)
    expect((await get(`${gateway.url}/query/list`, { 'x-api-key': ACME_KEY })).status).toBe(401)
  })

  it('counts a consumer\'s requests under its name, with its own limit instead of the route\'s', async () => {
    const statuses = async (key: string, n: number) => {
      const out: number[] = []
      for (let i = 0; i < n; i++) out.push((await get(`${gateway.url}/limited/x`, { 'x-api-key': key })).status)
      return out
    }
    expect(await statuses(ACME_KEY, 4)).toEqual([200, 200, 200, 429])
    expect(await statuses(BETA_KEY, 2)).toEqual([200, 429])
    const limited = await get(`${gateway.url}/limited/x`, { 'x-api-key': ACME_KEY })
    expect(limited.headers['ratelimit-policy']).toBe('3;w=60')
  })

  it('revokes a key through the admin API (audited) and restores it', async () => {
    const admin = (method: 'DELETE' | 'POST', path: string, body?: object) =>
      request(`${gateway.adminUrl}${path}`, { method, headers: body ? { 'content-type': 'application/json' } : {}, body: body && JSON.stringify(body) }).then(async (r) => ({ status: r.statusCode, json: (await r.body.json()) as Record<string, unknown> }))
    const revoked = await admin('DELETE', `/admin/consumers/acme/keys/sha256:${sha(ACME_KEY)}`)
    expect(revoked.status).toBe(200)
    expect(revoked.json.keys).toEqual([{ hash: `sha256:${sha(ACME_KEY)}`, revoked: true }])
    const refused = await get(`${gateway.url}/orders/1`, { 'x-api-key': ACME_KEY })
    expect([refused.status, refused.json().detail]).toEqual([401, 'The API key was revoked'])
    expect((await get(`${gateway.url}/orders/1`, { 'x-api-key': BETA_KEY })).status).toBe(200)
    expect((await admin('DELETE', `/admin/consumers/acme/keys/sha256:${sha(BETA_KEY)}`)).status).toBe(404)
    expect((await admin('DELETE', '/admin/consumers/nobody')).status).toBe(404)

    const listed = await request(`${gateway.adminUrl}/admin/consumers`).then((r) => r.body.json() as Promise<{ consumers: { name: string; keys: { revoked: boolean }[] }[] }>)
    expect(listed.consumers.map((c) => [c.name, c.keys[0]?.revoked])).toEqual([['acme', true], ['beta', false]])
    const audit = await request(`${gateway.adminUrl}/admin/audit`).then((r) => r.body.json() as Promise<{ entries: { action: string; consumer?: string }[] }>)
    expect(audit.entries[0]).toMatchObject({ action: 'revoke key', consumer: 'acme' })

    expect((await admin('POST', `/admin/consumers/acme/keys/${sha(ACME_KEY)}/restore`, {})).status).toBe(200)
    expect((await get(`${gateway.url}/orders/1`, { 'x-api-key': ACME_KEY })).status).toBe(200)
    expect((await admin('DELETE', '/admin/consumers/beta', { reason: 'left' })).status).toBe(200)
    expect((await get(`${gateway.url}/orders/1`, { 'x-api-key': BETA_KEY })).status).toBe(401)
    expect((await admin('POST', '/admin/consumers/beta/restore', {})).status).toBe(200)
    expect((await get(`${gateway.url}/orders/1`, { 'x-api-key': BETA_KEY })).status).toBe(200)
  })

  it('refuses a bad consumers file with file:line while its last good version serves; a good edit applies live', async () => {
    await gateway.writeRoutes('consumers.yaml', `${consumersFile()}  - name: gamma\n    apiKeys: [${GAMMA_KEY}]\n`)
    const refused = await waitFor(
      async () => {
        const routes = await request(`${gateway.adminUrl}/admin/routes`).then((r) => r.body.json() as Promise<{ sources: { source: string; state: string; errors: { line: number; message: string }[] }[] }>)
        return routes.sources.find((s) => s.source.endsWith('consumers.yaml') && s.state === 'last-good')
      },
      { what: 'the bad consumers file to be refused' },
    )
    expect(refused.errors[0]?.line).toBe(10)
    expect(refused.errors[0]?.message).toContain('must be "sha256:"')
    expect((await get(`${gateway.url}/orders/1`, { 'x-api-key': ACME_KEY })).status).toBe(200)

    await gateway.writeRoutes('consumers.yaml', `${consumersFile()}  - name: gamma\n    apiKeys: [sha256:${sha(GAMMA_KEY)}]\n`)
    await waitFor(async () => (await get(`${gateway.url}/orders/1`, { 'x-api-key': GAMMA_KEY })).status === 200, { what: 'gamma\'s key to be served' })
    expect(upstream.requests.at(-1)?.headers['x-consumer-name']).toBe('gamma')
  })

  it('refuses, with file and line, a consumer name or a key another file already defines', async () => {
    await gateway.writeRoutes('more-consumers.yaml', `consumers:\n  - name: acme\n    apiKeys: [sha256:${sha('other')}]\n  - name: delta\n    apiKeys: [sha256:${sha(BETA_KEY)}]\n`)
    const refused = await waitFor(
      async () => {
        const routes = await request(`${gateway.adminUrl}/admin/routes`).then((r) => r.body.json() as Promise<{ sources: { source: string; state: string; errors: { line: number; message: string }[] }[] }>)
        return routes.sources.find((s) => s.source.endsWith('more-consumers.yaml') && s.state === 'refused')
      },
      { what: 'the conflicting consumers file to be refused' },
    )
    expect(refused.errors.map((e) => [e.line, e.message.replace(/at .*consumers\.yaml/, 'at FILE')])).toEqual([
      [2, 'consumer name "acme" is already defined at FILE:2'],
      [4, 'consumer "delta" has a key of consumer "beta" at FILE:6'],
    ])
    await gateway.removeRoutes('more-consumers.yaml')
  })
})
