import type { FastifyRequest } from 'fastify'
import { createServer, type Server } from 'node:net'
import type { AddressInfo } from 'node:net'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { clientResponseHeaders } from '../../src/proxy/forwarding-headers.js'
import { startGateway, type TestGateway } from '../support/gateway.js'
import { startUpstream, type Upstream } from '../support/upstream.js'

describe('clientResponseHeaders', () => {
  it('removes hop-by-hop headers and adds the request id', () => {
    const headers = clientResponseHeaders({ 'content-type': 'text/plain', 'keep-alive': 'timeout=5', upgrade: 'h2c' }, { id: 'req-1' } as FastifyRequest)
    expect(headers).toEqual({ 'content-type': 'text/plain', 'x-request-id': 'req-1' })
  })

  it('removes what every Connection header lists when an upstream repeats it', () => {
    const repeated = { 'content-type': 'text/plain', connection: ['close', 'X-Internal-Route'], 'x-internal-route': 'blue' } as unknown as Parameters<typeof clientResponseHeaders>[0]
    expect(clientResponseHeaders(repeated, { id: 'req-1' } as FastifyRequest)).toEqual({ 'content-type': 'text/plain', 'x-request-id': 'req-1' })
  })
})

/** An upstream that writes its response by hand: the header lines exactly as given (latin1 bytes), then `ok`. */
async function rawUpstream(headerLines: string[]): Promise<{ server: Server; url: string }> {
  const server = createServer((socket) => {
    socket.once('data', () => socket.write(Buffer.from(`HTTP/1.1 200 OK\r\n${headerLines.join('\r\n')}\r\n\r\nok`, 'latin1')))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }
}

describe('upstream header values through the gateway', () => {
  // A control character in a header value, after and before the length is known (undici reports the two differently).
  let upstreams: Record<'obs' | 'control' | 'controlFirst', Awaited<ReturnType<typeof rawUpstream>>>
  let gateway: TestGateway
  beforeAll(async () => {
    upstreams = {
      obs: await rawUpstream(['Content-Length: 2', 'X-Name: caf\u00e9']),
      control: await rawUpstream(['Content-Length: 2', 'X-Odd: a\u0001b']),
      controlFirst: await rawUpstream(['X-Odd: a\u0001b', 'Content-Length: 2']),
    }
    const routes = Object.entries(upstreams).map(([name, { url }]) => `  - name: ${name}\n    prefix: /${name}\n    upstreams: [${url}]\n`)
    gateway = await startGateway({ 'r.yaml': `routes:\n${routes.join('')}` })
  })
  afterAll(async () => {
    await gateway?.close()
    for (const upstream of Object.values(upstreams ?? {})) upstream.server.close()
  })

  it('passes obs-text through as the upstream sent it', async () => {
    const response = await request(`${gateway.url}/obs`)
    expect(response.statusCode).toBe(200)
    expect(response.headers['x-name']).toBe('caf\u00e9')
    expect(await response.body.text()).toBe('ok')
  })

  it('answers a problem, not a crash, when a header value holds a control character (the upstream client refuses it)', async () => {
    for (const path of ['/control', '/controlFirst']) {
      const response = await request(`${gateway.url}${path}`)
      const body = (await response.body.json()) as { code: string }
      expect(response.statusCode).toBe(502)
      expect(response.headers['content-type']).toMatch(/^application\/problem\+json/)
      expect(body.code).toBe('upstream_bad_response')
    }
  })
})

describe('the deadline travels upstream (X-Portico-Timeout-Ms)', () => {
  let upstream: Upstream
  let gateway: TestGateway
  beforeAll(async () => {
    upstream = await startUpstream('deadline')
    gateway = await startGateway({
      'r.yaml': `routes:
  - name: plain
    prefix: /plain
    upstreams: [${upstream.url}]
    timeout: { response: 2s }
  - name: deadline
    prefix: /deadline
    upstreams: [${upstream.url}]
    timeout: { response: 5s }
    retry: { deadline: 1500ms }
`,
    })
  })
  afterAll(async () => {
    await gateway?.close()
    await upstream?.close()
  })

  const sentUpstream = async (path: string) => {
    const response = await request(`${gateway.url}${path}`, { headers: { 'x-portico-timeout-ms': '999999' } })
    return ((await response.body.json()) as { headers: Record<string, string> }).headers['x-portico-timeout-ms']
  }

  it('tells the upstream how long the gateway still waits, never what the client claimed', async () => {
    expect(await sentUpstream('/plain')).toBe('2000')
    const left = Number(await sentUpstream('/deadline'))
    expect(left).toBeGreaterThan(1_000)
    expect(left).toBeLessThanOrEqual(1_500)
  })
})

describe('what a client claims in forwarding headers', () => {
  let upstream: Upstream
  let direct: TestGateway
  let behindProxy: TestGateway
  beforeAll(async () => {
    upstream = await startUpstream('claims')
    const routes = { 'r.yaml': `routes:\n  - name: claims\n    prefix: /claims\n    upstreams: [${upstream.url}]\n` }
    direct = await startGateway(routes)
    behindProxy = await startGateway(routes, { 'trust-proxy': 'true' })
  })
  afterAll(async () => {
    await direct?.close()
    await behindProxy?.close()
    await upstream?.close()
  })

  const sentUpstream = async (gateway: TestGateway, headers: Record<string, string>) => {
    const response = await request(`${gateway.url}/claims/x`, { headers })
    return ((await response.body.json()) as { headers: Record<string, string> }).headers
  }

  it('drops underscore spellings of forwarding headers and claims (WSGI and CGI read them as the real ones), keeping other underscore names', async () => {
    const spellings = { x_forwarded_for: '6.6.6.6', 'x-forwarded_host': 'evil.example', x_forwarded_proto: 'https', x_real_ip: '6.6.6.7', x_request_id: 'forged', 'x_portico-timeout_ms': '1' }
    for (const gateway of [direct, behindProxy]) {
      const sent = await sentUpstream(gateway, { ...spellings, x_app_flag: 'kept' })
      for (const name of Object.keys(spellings)) expect(sent[name], name).toBeUndefined()
      expect(sent.x_app_flag).toBe('kept')
      expect(sent['x-forwarded-for']).toMatch(/127\.0\.0\.1$/)
    }
  })

  it('passes on only http, https, ws and wss as a trusted proxy\'s X-Forwarded-Proto; anything else becomes the connection\'s', async () => {
    expect((await sentUpstream(behindProxy, { 'x-forwarded-proto': 'https' }))['x-forwarded-proto']).toBe('https')
    expect((await sentUpstream(behindProxy, { 'x-forwarded-proto': 'wss' }))['x-forwarded-proto']).toBe('wss')
    for (const junk of ['javascript', 'data', 'HTTPS:', 'https://evil']) expect((await sentUpstream(behindProxy, { 'x-forwarded-proto': junk }))['x-forwarded-proto'], junk).toBe('http')
    expect((await sentUpstream(direct, { 'x-forwarded-proto': 'https' }))['x-forwarded-proto']).toBe('http')
  })
})
