import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { startGateway, type TestGateway } from '../support/gateway.js'
import { waitFor } from '../support/poll.js'
import { startUpstream, type Upstream } from '../support/upstream.js'

const json = async (url: string, init: Parameters<typeof request>[1] = {}) => {
  const response = await request(url, init)
  const text = await response.body.text()
  return { status: response.statusCode, headers: response.headers, body: text === '' ? undefined : (JSON.parse(text) as Record<string, any>) }
}

describe('proxying through the gateway', () => {
  let users: Upstream, usersAdmin: Upstream, slow: Upstream, ws: Upstream, busy: Upstream
  let gateway: TestGateway

  beforeAll(async () => {
    users = await startUpstream('users')
    usersAdmin = await startUpstream('users-admin')
    ws = await startUpstream('ws', undefined, { websocket: true })
    busy = await startUpstream('busy', (_req, res) => res.writeHead(503, { 'retry-after': '7' }).end('come back later'))
    slow = await startUpstream('slow', (_req, res) => {
      setTimeout(() => res.end('late'), 2_000).unref()
    })
    gateway = await startGateway({
      'api.yaml': `
routes:
  - name: users
    prefix: /api/users
    upstreams: [${users.url}]
  - name: users-admin
    prefix: /api/users/admin
    rewritePrefix: /internal
    upstreams: [${usersAdmin.url}]
  - name: readonly
    prefix: /ro
    methods: [GET, HEAD]
    upstreams: [${users.url}]
  - name: slow
    prefix: /slow
    timeout: { response: 200ms }
    upstreams: [${slow.url}]
  - name: dead
    prefix: /dead
    timeout: { connect: 300ms }
    upstreams: [http://127.0.0.1:1]
  - name: chat
    prefix: /chat
    websocket: true
    rewritePrefix: /socket
    upstreams: [${ws.url}]
  - name: busy
    prefix: /busy
    upstreams: [${busy.url}]
  - name: nochat
    prefix: /nochat
    upstreams: [${ws.url}]
`,
    })
  })
  afterAll(async () => {
    await gateway?.close()
    await Promise.all([users, usersAdmin, slow, ws, busy].map((u) => u?.close()))
  })

  it.each([
    ['/api/users', 'users', '/api/users'],
    ['/api/users/7', 'users', '/api/users/7'],
    ['/api/users/admin', 'users-admin', '/internal'],
    ['/api/users/admin/keys?x=1', 'users-admin', '/internal/keys?x=1'],
    ['/api/users/administrator', 'users', '/api/users/administrator'],
  ])('routes %s to the longest prefix (%s) as %s', async (path, upstream, forwarded) => {
    const { status, body } = await json(gateway.url + path)
    expect(status).toBe(200)
    expect(body).toMatchObject({ upstream, url: forwarded })
  })

  it('never matches a prefix inside a segment: /api/usersX is not /api/users', async () => {
    const { status, body, headers } = await json(`${gateway.url}/api/usersX`)
    expect(status).toBe(404)
    expect(headers['content-type']).toMatch(/^application\/problem\+json/)
    expect(body).toMatchObject({ status: 404, code: 'no_route', type: expect.stringContaining('no-route'), title: expect.any(String), detail: expect.stringContaining('/api/usersX') })
  })

  it('passes the query string through untouched', async () => {
    const { body } = await json(`${gateway.url}/api/users/q?b=2&a=1&a=%2F&empty=&plus=a+b`)
    expect(body?.url).toBe('/api/users/q?b=2&a=1&a=%2F&empty=&plus=a+b')
  })

  it.each([
    ['/api/users/..%2f..%2fsecret', '/secret'],
    ['/api/users/%2e%2e/%2e%2e/secret', '/secret'],
    ['/api/users/x/../admin/keys', '/api/users/admin/keys'],
    ['/api/users/..\\..\\secret', '/secret'],
    ['//api//users//7', '/api/users/7'],
    ['/api/users/./7', '/api/users/7'],
  ])('normalises %s before matching, so it is routed as %s', async (raw, normalised) => {
    const { status, body } = await json(gateway.url + raw)
    if (normalised === '/secret') {
      expect(status).toBe(404)
      expect(body?.code).toBe('no_route')
      expect(users.requests.some((r) => r.url.includes('secret'))).toBe(false)
    } else {
      expect(status).toBe(200)
      const expectedUpstream = normalised.startsWith('/api/users/admin') ? 'users-admin' : 'users'
      expect(body?.upstream).toBe(expectedUpstream)
      expect(body?.url).toBe(expectedUpstream === 'users-admin' ? '/internal/keys' : normalised)
    }
  })

  it('sets X-Forwarded-* and a request id, and ignores client-supplied forwarding headers when not trusted', async () => {
    const { body, headers } = await json(`${gateway.url}/api/users/h`, {
      headers: { 'x-forwarded-for': '6.6.6.6', 'x-forwarded-host': 'evil.example', forwarded: 'for=6.6.6.6', host: 'gw.example' },
    })
    expect(body?.headers['x-forwarded-for']).toBe('127.0.0.1')
    expect(body?.headers['x-forwarded-host']).toBe('gw.example')
    expect(body?.headers['x-forwarded-proto']).toBe('http')
    expect(body?.headers.forwarded).toBeUndefined()
    expect(body?.headers.host).toBe(new URL(users.url).host)
    expect(body?.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/)
    expect(headers['x-request-id']).toBe(body?.headers['x-request-id'])
  })

  it('accepts a well-formed client request id and replaces a malformed one', async () => {
    const kept = await json(`${gateway.url}/api/users/id`, { headers: { 'x-request-id': 'abc-123' } })
    expect(kept.headers['x-request-id']).toBe('abc-123')
    expect(kept.body?.headers['x-request-id']).toBe('abc-123')
    const replaced = await json(`${gateway.url}/api/users/id`, { headers: { 'x-request-id': 'bad id with spaces <script>' } })
    expect(replaced.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/)
  })

  it('removes hop-by-hop headers, and those the client names in Connection', async () => {
    const { get } = await import('node:http')
    const body = await new Promise<Record<string, any>>((resolve, reject) => {
      get(`${gateway.url}/api/users/hop`, { headers: { 'x-drop-me': '1', connection: 'keep-alive, x-drop-me', 'proxy-authorization': 'secret', te: 'trailers' } }, (res) => {
        let text = ''
        res.on('data', (d: Buffer) => (text += d.toString()))
        res.on('end', () => resolve(JSON.parse(text) as Record<string, any>))
      }).on('error', reject)
    })
    expect(body?.headers['x-drop-me']).toBeUndefined()
    expect(body?.headers['proxy-authorization']).toBeUndefined()
    expect(body?.headers.te).toBeUndefined()
  })

  it('streams a large request body through without buffering it whole', async () => {
    const size = 8 * 1024 * 1024
    const { status, body } = await json(`${gateway.url}/api/users/upload`, { method: 'POST', body: Buffer.alloc(size, 1), headers: { 'content-type': 'application/octet-stream' } })
    expect(status).toBe(200)
    expect(body?.bytes).toBe(size)
  })

  it('answers 413 payload_too_large for a declared body over the limit, without calling the upstream', async () => {
    const before = users.requests.length
    const { status, body } = await json(`${gateway.url}/api/users/upload`, { method: 'POST', body: Buffer.alloc(11 * 1024 * 1024), headers: { 'content-type': 'application/octet-stream' } })
    expect(status).toBe(413)
    expect(body?.code).toBe('payload_too_large')
    expect(users.requests.length).toBe(before)
  })

  it('answers 413 for a chunked body that grows over the limit, and the upstream never gets it whole', async () => {
    const { Readable } = await import('node:stream')
    const chunk = Buffer.alloc(1024 * 1024, 2)
    let sent = 0
    const body = new Readable({
      read() {
        sent++
        this.push(sent <= 12 ? chunk : null)
      },
    })
    const { status, body: problem } = await json(`${gateway.url}/api/users/chunked`, { method: 'POST', body, headers: { 'content-type': 'application/octet-stream' } })
    expect(status).toBe(413)
    expect(problem?.code).toBe('payload_too_large')
    expect(users.requests.some((r) => r.url === '/api/users/chunked' && r.bytes > 10 * 1024 * 1024)).toBe(false)
  })

  it('answers 405 with Allow for a method the route does not accept', async () => {
    const { status, body, headers } = await json(`${gateway.url}/ro/x`, { method: 'DELETE' })
    expect(status).toBe(405)
    expect(body?.code).toBe('method_not_allowed')
    expect(headers.allow).toBe('GET, HEAD')
  })

  it('answers 504 upstream_timeout within the response timeout when the upstream is slow', async () => {
    const started = Date.now()
    const { status, body, headers } = await json(`${gateway.url}/slow`)
    const took = Date.now() - started
    expect(status).toBe(504)
    expect(headers['content-type']).toMatch(/^application\/problem\+json/)
    expect(body).toMatchObject({ code: 'upstream_timeout', status: 504 })
    expect(took).toBeGreaterThanOrEqual(190)
    expect(took).toBeLessThan(1_500)
  })

  it('passes an upstream 503 through unchanged, asking the upstream once (no built-in retry)', async () => {
    const before = busy.requests.length
    const response = await request(`${gateway.url}/busy`)
    expect(response.statusCode).toBe(503)
    expect(response.headers['retry-after']).toBe('7')
    expect(await response.body.text()).toBe('come back later')
    expect(busy.requests.length - before).toBe(1)
  })

  it('aborts the upstream request when the client goes away', async () => {
    const hung: { closed: boolean }[] = []
    const hang = await startUpstream('hang', (req, res) => {
      const seen = { closed: false }
      hung.push(seen)
      res.on('close', () => (seen.closed = true))
    })
    await gateway.writeRoutes('hang.yaml', `routes:\n  - name: hang\n    prefix: /hang\n    upstreams: [${hang.url}]\n`)
    await waitFor(async () => (await request(`${gateway.adminUrl}/admin/routes`).then((r) => r.body.text())).includes('"hang"'), { what: 'the hang route' })
    const controller = new AbortController()
    const pending = request(`${gateway.url}/hang`, { signal: controller.signal }).catch((error: Error) => error)
    await waitFor(() => hung.length === 1, { what: 'the request to reach the upstream' })
    controller.abort()
    await pending
    await waitFor(() => hung[0]?.closed, { timeoutMs: 2_000, what: 'the upstream request to be aborted' })
    await hang.close()
  })

  it('answers 502 upstream_unreachable when nothing listens at the instance', async () => {
    const { status, body } = await json(`${gateway.url}/dead/x`)
    expect(status).toBe(502)
    expect(body).toMatchObject({ code: 'upstream_unreachable', status: 502, detail: expect.stringContaining('ECONNREFUSED') })
  })

  it('proxies a WebSocket upgrade and its messages both ways, with the prefix rewritten', async () => {
    const socket = new WebSocket(`${gateway.url.replace('http', 'ws')}/chat/room1?token=t`)
    const messages: string[] = []
    socket.on('message', (data) => messages.push(data.toString()))
    await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject))
    socket.send('hello')
    await expect.poll(() => messages.length, { timeout: 3_000 }).toBe(2)
    socket.close()
    const greeting = JSON.parse(messages[0] ?? '{}') as { url: string; headers: Record<string, string> }
    expect(greeting.url).toBe('/socket/room1?token=t')
    expect(greeting.headers['x-forwarded-for']).toBe('127.0.0.1')
    expect(messages[1]).toBe('ws:hello')
  })

  it('refuses a WebSocket upgrade on a route that does not allow it', async () => {
    const socket = new WebSocket(`${gateway.url.replace('http', 'ws')}/nochat`)
    const status = await new Promise<number>((resolve) => {
      socket.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0))
      socket.once('open', () => resolve(101))
      socket.once('error', () => undefined)
    })
    expect(status).toBe(400)
  })

  it('answers a malformed request line with a problem body', async () => {
    const { createConnection } = await import('node:net')
    const { port } = new URL(gateway.url)
    const raw = await new Promise<string>((resolve) => {
      let data = ''
      const socket = createConnection({ host: '127.0.0.1', port: Number(port) }, () => socket.write('GET /x HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n'))
      socket.on('data', (d) => (data += d.toString()))
      socket.on('close', () => resolve(data))
    })
    expect(raw).toMatch(/^HTTP\/1.1 400/)
    expect(raw).toContain('application/problem+json')
    expect(raw).toContain('"code":"bad_request"')
  })
})
