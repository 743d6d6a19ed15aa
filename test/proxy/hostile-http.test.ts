import { createServer, type IncomingMessage, type Server } from 'node:http'
import { connect, type AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startGateway, type TestGateway } from '../support/gateway.js'
import { answer } from '../support/http.js'
import { waitFor } from '../support/poll.js'
import { rawExchange, statusesOf } from '../support/raw-http.js'
import { routeFile } from '../support/routes.js'
import { echo, startUpstream, type Upstream } from '../support/upstream.js'

/**
 * What a hostile or careless client sends, byte for byte, and what must hold: nothing smuggled reaches an upstream,
 * framing the gateway cannot pass on faithfully is refused with a problem+json answer, and nothing the client caused
 * counts against an upstream.
 */
describe('hostile HTTP', () => {
  let upstream: Upstream
  let closing: Server
  let bodies: Server
  let paced: Server
  // The paced upstream's requests under way now and at most, and the order they arrived in.
  const pacing = { now: 0, most: 0, order: [] as string[] }
  // Requests the body reader began to receive, and those given up before their body ended.
  const bodyRequests = { started: 0, givenUp: 0 }
  let gateway: TestGateway
  let port: number
  beforeAll(async () => {
    upstream = await startUpstream('echo', echo('echo'))
    // An upstream that answers once it has read the whole body.
    bodies = createServer((req, res) => {
      bodyRequests.started++
      req.on('close', () => void (req.complete || bodyRequests.givenUp++))
      req.resume().on('end', () => res.end('read'))
    })
    await new Promise<void>((resolve) => bodies.listen(0, '127.0.0.1', resolve))
    // An upstream that takes its time over each request (the first longest) and notes how many overlap.
    paced = createServer((req, res) => {
      pacing.order.push(req.url ?? '')
      pacing.most = Math.max(pacing.most, ++pacing.now)
      setTimeout(() => {
        pacing.now--
        // A body of unknown length: an HTTP/1.0 client's connection must close after it (no chunked coding there).
        if (req.url?.includes('/unknown-length/')) return void res.write(`done ${req.url}`, () => res.end())
        res.end(`done ${req.url}`)
      }, req.url?.endsWith('/1') ? 300 : 50)
    })
    await new Promise<void>((resolve) => paced.listen(0, '127.0.0.1', resolve))
    // An upstream that asks to close every connection.
    closing = createServer((_req, res) => res.writeHead(200, { connection: 'close', 'content-type': 'text/plain' }).end('bye'))
    await new Promise<void>((resolve) => closing.listen(0, '127.0.0.1', resolve))
    const closingUrl = `http://127.0.0.1:${(closing.address() as AddressInfo).port}`
    gateway = await startGateway(
      {
        'r.yaml': [
          routeFile('echo', '/echo', upstream.url, 'circuitBreaker: { volumeThreshold: 3, errorThresholdPercentage: 50 }', 'outlierDetection: { consecutiveFailures: 2 }'),
          routeFile('closing', '/closing', closingUrl).replace('routes:\n', ''),
          routeFile('paced', '/paced', `http://127.0.0.1:${(paced.address() as AddressInfo).port}`).replace('routes:\n', ''),
          routeFile('bodies', '/bodies', `http://127.0.0.1:${(bodies.address() as AddressInfo).port}`, 'timeout: { response: 20s }', 'circuitBreaker: { volumeThreshold: 3, errorThresholdPercentage: 50 }', 'outlierDetection: { consecutiveFailures: 2 }').replace('routes:\n', ''),
        ].join(''),
      },
      { 'max-body': '1kb' },
    )
    port = Number(new URL(gateway.url).port)
  })
  afterAll(async () => {
    await gateway?.close()
    await upstream?.close()
    closing?.closeAllConnections()
    closing?.close()
    bodies?.closeAllConnections()
    bodies?.close()
    paced?.closeAllConnections()
    paced?.close()
  })

  const received = () => upstream.requests.map((r) => r.url)

  it('answers Expect: 100-continue itself and sends the body on (curl does this for every upload over 1 MiB)', async () => {
    const before = upstream.requests.length
    for (let i = 0; i < 5; i++) {
      const { text } = await rawExchange(port, 'POST /echo/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\nhello')
      expect(statusesOf(text)).toEqual([100, 200])
    }
    expect(upstream.requests.slice(before).map((r) => [r.url, r.bytes, r.headers.expect])).toEqual(Array(5).fill(['/echo/upload', 5, undefined]))
    // and the breaker (volume 3) heard only successes
    expect((await answer(`${gateway.url}/echo/after`)).status).toBe(200)
  })

  it.each([
    ['a lone percent sign', '?a=100%'],
    ['dot segments in a value', '?next=/a/../b'],
    ['malformed escapes and plus signs', '?x=%zz&y=a+b&z=%2F'],
    ['an empty query', '?'],
  ])('passes the query byte for byte (%s)', async (_case, query) => {
    const { text } = await rawExchange(port, `GET /echo/q${query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
    expect(statusesOf(text)).toEqual([200])
    expect(received().at(-1)).toBe(`/echo/q${query}`)
  })

  it('keeps connection handling hop by hop, both ways', async () => {
    // The upstream's Connection: close neither reaches the client nor closes its connection.
    const keep = await rawExchange(port, 'GET /closing HTTP/1.1\r\nHost: x\r\n\r\n')
    expect(statusesOf(keep.text)).toEqual([200])
    expect(keep.text.toLowerCase()).not.toContain('connection: close')
    expect(keep.open).toBe(true)
    // A client that asks to close, or speaks HTTP/1.0, gets its connection closed even when the upstream keeps its own.
    expect((await rawExchange(port, 'GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')).open).toBe(false)
    const old = await rawExchange(port, 'GET /echo HTTP/1.0\r\n\r\n')
    expect(statusesOf(old.text)).toEqual([200])
    expect(old.open).toBe(false)
  })

  it.each([
    ['two Host headers', 'GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n', 400, 'bad_request'],
    ['an invalid Host', 'GET /echo HTTP/1.1\r\nHost: a b/c\r\n\r\n', 400, 'bad_request'],
    ['no Host in HTTP/1.1', 'GET /echo HTTP/1.1\r\n\r\n', 400, 'bad_request'],
    ['TRACE', 'TRACE /echo HTTP/1.1\r\nHost: x\r\n\r\n', 405, 'method_not_allowed'],
    ['a WebDAV method', 'PROPFIND /echo HTTP/1.1\r\nHost: x\r\n\r\n', 405, 'method_not_allowed'],
    ['an unknown method', 'BREW /echo HTTP/1.1\r\nHost: x\r\n\r\n', 501, 'not_implemented'],
    ['CONNECT', 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n', 501, 'not_implemented'],
    ['a path fastify cannot decode', 'GET /echo/%zz HTTP/1.1\r\nHost: x\r\n\r\n', 400, 'bad_path'],
    ['a transfer coding besides chunked', 'POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n', 501, 'not_implemented'],
  ])('refuses %s with problem+json', async (_case, bytes, status, code) => {
    const before = upstream.requests.length
    const { text } = await rawExchange(port, bytes)
    expect(statusesOf(text)).toEqual([status])
    expect(text).toContain('application/problem+json')
    expect(text).toContain(`"code":"${code}"`)
    expect(upstream.requests.length).toBe(before)
  })

  it('serves HTTP/1.0 without a Host', async () => {
    expect(statusesOf((await rawExchange(port, 'GET /echo HTTP/1.0\r\n\r\n')).text)).toEqual([200])
  })

  it('drops address and method claims from a client that is not a trusted proxy', async () => {
    const { text } = await rawExchange(
      port,
      'GET /echo/claims HTTP/1.1\r\nHost: x\r\nX-Real-IP: 10.0.0.1\r\nTrue-Client-IP: 10.0.0.2\r\nX-Original-URL: /admin\r\nX-HTTP-Method-Override: DELETE\r\nConnection: close\r\n\r\n',
    )
    expect(statusesOf(text)).toEqual([200])
    const headers = upstream.requests.at(-1)?.headers as IncomingMessage['headers']
    for (const name of ['x-real-ip', 'true-client-ip', 'x-original-url', 'x-http-method-override']) expect(headers[name]).toBeUndefined()
  })

  it.each([
    ['Content-Length and Transfer-Encoding together (CL.TE)', 'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /echo/smuggled HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['two Content-Lengths', 'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\nGET /echo/smuggled HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['an obfuscated Transfer-Encoding', 'POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\nContent-Length: 44\r\n\r\nGET /echo/smuggled HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['a folded Transfer-Encoding', 'POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\nGET /echo/smuggled HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['bare LF line ends', 'POST /echo HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\n\n0\n\nGET /echo/smuggled HTTP/1.1\nHost: x\n\n'],
    ['a chunk size with junk', 'POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x0\r\n\r\nGET /echo/smuggled HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['a space before the colon', 'POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: 44\r\n\r\nGET /echo/smuggled HTTP/1.1\r\nHost: x\r\n\r\n'],
  ])('lets nothing smuggled reach the upstream: %s', async (_case, bytes) => {
    await rawExchange(port, bytes)
    expect(received()).not.toContain('/echo/smuggled')
  })

  it('forwards pipelined requests one after another, in order, as nginx does (their side effects land in order)', async () => {
    pacing.order.length = 0
    pacing.most = 0
    const requests = [1, 2, 3].map((n) => `POST /paced/seq/${n} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n${n}`)
    const { text } = await rawExchange(port, `${requests.join('')}GET /paced/seq/4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
    expect(statusesOf(text)).toEqual([200, 200, 200, 200])
    expect([...text.matchAll(/done (\/paced\/seq\/\d)/g)].map((m) => m[1])).toEqual(['/paced/seq/1', '/paced/seq/2', '/paced/seq/3', '/paced/seq/4'])
    expect(pacing.order).toEqual(['/paced/seq/1', '/paced/seq/2', '/paced/seq/3', '/paced/seq/4'])
    expect(pacing.most).toBe(1)
  })

  it.each([
    ['HTTP/1.0 without keep-alive', 'GET /paced/old/1 HTTP/1.0\r\n\r\nGET /paced/old/2 HTTP/1.0\r\n\r\nGET /paced/old/3 HTTP/1.0\r\n\r\n'],
    ['HTTP/1.0 keep-alive, answered with a body of unknown length (so with Connection: close)', 'GET /paced/unknown-length/1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /paced/unknown-length/2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /paced/unknown-length/3 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n'],
    ['HTTP/1.1 with Connection: close on the first', 'GET /paced/close/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nPOST /paced/close/2 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\nGET /paced/close/3 HTTP/1.1\r\nHost: x\r\n\r\n'],
  ])('never sends the pipelined requests it will not answer (%s)', async (_case, bytes) => {
    pacing.order.length = 0
    const { text, open } = await rawExchange(port, bytes)
    expect(statusesOf(text)).toEqual([200])
    expect(open).toBe(false)
    // Requests sent on would have gone out when they were parsed, long before the connection closed: a request sent
    // after the close, and answered, reaches the upstream after them.
    expect((await answer(`${gateway.url}/paced/after-the-close`)).status).toBe(200)
    expect(pacing.order.slice(1)).toEqual(['/paced/after-the-close'])
  })

  it('finishes a pipelined answer in flight before it answers the next request\'s parse error', async () => {
    const { text } = await rawExchange(port, 'GET /echo/first HTTP/1.1\r\nHost: x\r\n\r\nGET /echo/second HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n')
    expect(statusesOf(text), text).toEqual([200, 400])
    const [first, second] = text.split(/(?=HTTP\/1\.1 400)/)
    expect(first).toContain('"url":"/echo/first"')
    expect(second).toContain('"code":"bad_request"')
  })

  it.each([
    ['a chunk size line ended by a bare LF', '5\nworld\r\n0\r\n\r\n'],
    ['a chunk extension over the parser\'s limit', `5;${'x'.repeat(20_000)}\r\nworld\r\n0\r\n\r\n`],
  ])('answers a body broken midway (%s) 400 at once, gives up its upstream request, and counts it against nothing', async (_case, broken) => {
    for (let i = 0; i < 4; i++) {
      const { started, givenUp } = bodyRequests
      const socket = connect(port, '127.0.0.1')
      let text = ''
      socket.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')))
      const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()))
      socket.on('error', () => undefined)
      socket.write('POST /bodies/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n')
      // The upstream request is under way, its body streaming, before the client breaks the framing.
      await waitFor(() => bodyRequests.started > started, { timeoutMs: 5_000, what: 'the upstream request to start' })
      const brokenAt = Date.now()
      socket.write(broken)
      await closed
      expect(Date.now() - brokenAt).toBeLessThan(5_000) // not the route's 20 s response timeout
      expect(statusesOf(text), text).toEqual([400])
      expect(text).toContain('"code":"bad_request"')
      await waitFor(() => bodyRequests.givenUp > givenUp, { timeoutMs: 5_000, what: 'the upstream request to be given up' })
    }
    // Eight broken bodies: a breaker of volume 3 and an ejection after 2 failures would both have tripped.
    expect((await answer(`${gateway.url}/bodies/fine`, { method: 'POST', body: 'ok' })).text).toBe('read')
  })

  it.each([
    ['a segment of three dots', '/echo/...'],
    ['a ..; segment (Tomcat\'s path parameter)', '/echo/users/1/..;/x'],
    ['a segment ending in ..', '/echo/a../b'],
    ['an escape that is not UTF-8', '/echo/%C3%28'],
  ])('refuses a path the proxy engine will not send (%s) 400 bad_path, counted against no upstream', async (_case, path) => {
    const before = upstream.requests.length
    for (let i = 0; i < 10; i++) {
      const { status, code } = await answer(`${gateway.url}${path}`)
      expect([status, code]).toEqual([400, 'bad_path'])
    }
    expect(upstream.requests.length).toBe(before)
    // ten refusals: the breaker (volume 3) and the outlier detector (2 in a row) heard none of them
    expect((await answer(`${gateway.url}/echo/fine`)).status).toBe(200)
  })

  it('counts nothing the client caused against the upstream (breaker volume 3, ejection after 2)', async () => {
    for (let i = 0; i < 6; i++) {
      const { text } = await rawExchange(port, `POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n800\r\n${'a'.repeat(2048)}\r\n0\r\n\r\n`)
      expect(statusesOf(text)).toEqual([413])
    }
    const after = await answer(`${gateway.url}/echo/fine`)
    expect(after.status).toBe(200)
  })
})

describe('upstream oddities', () => {
  const responses = {
    // 304 with the representation's Content-Length: legal (RFC 9110 §8.6), and no body follows.
    notModified: 'HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: "v1"\r\n\r\n',
    overflow: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\nabc\r\n0\r\n\r\n',
    unsolicitedContinue: 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok',
    location: 'HTTP/1.1 302 Found\r\nLocation: ORIGIN/v1/users/7?tab=1\r\nContent-Length: 0\r\n\r\n',
    elsewhere: 'HTTP/1.1 302 Found\r\nLocation: https://login.example/start\r\nContent-Length: 0\r\n\r\n',
  }
  let servers: Server[]
  let gateway: TestGateway
  let port: number
  beforeAll(async () => {
    const { createServer: createTcpServer } = await import('node:net')
    const entries = await Promise.all(
      Object.entries(responses).map(async ([name, response]) => {
        const server = createTcpServer((socket) => socket.once('data', () => socket.write(response.replace('ORIGIN', `http://127.0.0.1:${(server.address() as AddressInfo).port}`))))
        await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
        return [name, server] as const
      }),
    )
    servers = entries.map(([, server]) => server as unknown as Server)
    gateway = await startGateway({
      'r.yaml': `routes:\n${entries
        .map(([name, server]) => `  - name: ${name}\n    prefix: /${name}\n    rewritePrefix: /v1\n    upstreams: [http://127.0.0.1:${(server.address() as AddressInfo).port}]\n`)
        .join('')}`,
    })
    port = Number(new URL(gateway.url).port)
  })
  afterAll(async () => {
    await gateway?.close()
    for (const server of servers ?? []) server.close()
  })

  const get = (path: string) => rawExchange(port, `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)

  it('passes a 304 with Content-Length, without a body', async () => {
    const { text } = await get('/notModified/x')
    expect(statusesOf(text)).toEqual([304])
    expect(text).toMatch(/etag: "v1"/i)
  })

  it('answers a broken body 502 upstream_bad_response, not 500', async () => {
    for (const path of ['/overflow/x', '/unsolicitedContinue/x']) {
      const { text } = await get(path)
      expect(statusesOf(text)).toEqual([502])
      expect(text).toContain('"code":"upstream_bad_response"')
    }
  })

  it('never shows the instance\'s address in Location, and undoes the prefix rewrite', async () => {
    expect((await get('/location/x')).text).toMatch(/\r\nlocation: \/location\/users\/7\?tab=1\r\n/i)
    expect((await get('/elsewhere/x')).text).toMatch(/\r\nlocation: https:\/\/login\.example\/start\r\n/i)
  })
})
