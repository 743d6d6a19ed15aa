import { execFile } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { readFile, rm } from 'node:fs/promises'
import { request as httpRequest } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect as tlsConnect } from 'node:tls'
import { promisify } from 'node:util'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { TestCa, writePair, type IssuedPair } from '../support/certificates.js'
import { makeRoutesDir, runCli, spawnGateway, startGateway, type TestGateway } from '../support/gateway.js'
import { waitFor } from '../support/poll.js'
import { routeFile } from '../support/routes.js'
import { handshake, http2Get, httpsGet, openHttp2 } from '../support/tls-clients.js'
import { startUpstream, type Upstream } from '../support/upstream.js'

const run = promisify(execFile)

let ca: TestCa
let dir: string
let gateway: TestGateway
let upstream: Upstream
let failing: Upstream
let ws: Upstream
let slow: Upstream
let port: number
let accessLog: string
let first: IssuedPair
let apiPair: IssuedPair
const fingerprintOf = (pem: string) => new X509Certificate(pem).fingerprint256

beforeAll(async () => {
  ca = TestCa.create()
  dir = mkdtempSync(join(tmpdir(), 'portico-tls-'))
  accessLog = join(mkdtempSync(join(tmpdir(), 'portico-tls-log-')), 'access.log')
  first = ca.issue(['gateway.test', 'localhost'])
  apiPair = ca.issue(['api.test'])
  writePair(dir, 'default', first)
  writePair(dir, 'api', apiPair)
  writePair(dir, 'apps', ca.issue(['*.apps.test']))
  upstream = await startUpstream('users')
  failing = await startUpstream('failing', (_req, res) => void res.writeHead(500).end('no'))
  ws = await startUpstream('ws', undefined, { websocket: true })
  slow = await startUpstream('slow', (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' })
    let sent = 0
    const timer = setInterval(() => {
      res.write(`chunk ${sent}\n`)
      if (++sent === 60) {
        clearInterval(timer)
        res.end()
      }
    }, 50)
  })
  gateway = await startGateway(
    {
      'r.yaml': [
        routeFile('users', '/users', upstream.url),
        routeFile('limited', '/limited', upstream.url, 'rateLimit: { limit: 3, window: 1m }'),
        routeFile('kept', '/kept', upstream.url, 'preserveHost: true'),
        routeFile('cached', '/cached', upstream.url, 'cache: { ttl: 30s }'),
        routeFile('failing', '/failing', failing.url, 'circuitBreaker: { volumeThreshold: 3, errorThresholdPercentage: 50, resetTimeout: 10m }', 'retry: { attempts: 1 }'),
        routeFile('ws', '/ws', ws.url, 'websocket: true'),
        routeFile('slow', '/slow', slow.url),
      ]
        .map((file, i) => (i === 0 ? file : file.replace('routes:\n', '')))
        .join(''),
    },
    { 'tls-dir': dir, 'redirect-port': '0' },
    { PORTICO_ACCESS_LOG: accessLog },
  )
  port = Number(new URL(gateway.url).port)
})

afterAll(async () => {
  await gateway?.close()
  await Promise.all([upstream, failing, ws, slow].map((u) => u?.close()))
  rmSync(dir, { recursive: true, force: true })
  ca?.remove()
})

describe('TLS on the traffic port', () => {
  it('says https in its URL and offers h2 and http/1.1 by ALPN', async () => {
    expect(gateway.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/)
    expect((await handshake(port, ca.pem, { servername: 'gateway.test' })).alpn).toBe('h2')
    expect((await handshake(port, ca.pem, { servername: 'gateway.test', alpn: ['http/1.1'] })).alpn).toBe('http/1.1')
  })

  it('picks the certificate by SNI: an exact name, a wildcard one label deep, else the default', async () => {
    const served = async (servername?: string) => (await handshake(port, ca.pem, { servername })).certificate.subjectaltname
    expect(await served('api.test')).toBe('DNS:api.test')
    expect(await served('API.Test')).toBe('DNS:api.test')
    expect(await served('shop.apps.test')).toBe('DNS:*.apps.test')
    expect(await served('a.shop.apps.test')).toBe('DNS:gateway.test, DNS:localhost')
    expect(await served('unknown.example')).toBe('DNS:gateway.test, DNS:localhost')
    expect(await served(undefined)).toBe('DNS:gateway.test, DNS:localhost')
  })

  it('refuses TLS renegotiation and offers nothing below TLS 1.2', async () => {
    const socket = tlsConnect({ host: '127.0.0.1', port, ca: ca.pem, servername: 'gateway.test', maxVersion: 'TLSv1.2' })
    await new Promise((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject))
    expect(socket.getProtocol()).toBe('TLSv1.2')
    const refused = await new Promise<Error | null>((resolve) => {
      socket.once('error', resolve)
      socket.renegotiate({}, (error) => resolve(error))
    })
    socket.destroy()
    expect(refused).toBeInstanceOf(Error)
    const old = await run('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-tls1_1', '-servername', 'gateway.test'], { timeout: 10_000 }).then(
      () => 'handshake',
      (error: { stdout?: string }) => error.stdout ?? '',
    )
    expect(old).not.toBe('handshake')
    expect(old).toMatch(/no peer certificate available/)
  })

  it('proxies HTTP/2 to an HTTP/1.1 upstream: Host is the instance\'s, :authority in X-Forwarded-Host, proto https, nothing connection-specific', async () => {
    const session = await openHttp2(gateway.url, ca.pem)
    try {
      const answer = await http2Get(session, '/users/me', { ':authority': 'gateway.test', te: 'trailers' })
      expect(answer.status).toBe(200)
      const seen = JSON.parse(answer.body) as { headers: Record<string, string> }
      expect(seen.headers.host).toBe(new URL(upstream.url).host)
      expect(seen.headers['x-forwarded-host']).toBe('gateway.test')
      expect(seen.headers['x-forwarded-proto']).toBe('https')
      expect(Object.keys(seen.headers).filter((h) => h.startsWith(':') || ['te', 'upgrade', 'http2-settings', 'keep-alive', 'transfer-encoding'].includes(h))).toEqual([])
      expect(answer.headers['x-request-id']).toBeTruthy()
      expect(answer.headers.connection).toBeUndefined()

      const kept = JSON.parse((await http2Get(session, '/kept/x', { ':authority': 'gateway.test' })).body) as { headers: Record<string, string> }
      expect(kept.headers.host).toBe('gateway.test')
    } finally {
      session.close()
    }
  })

  it('answers HTTPS over HTTP/1.1 the same way, with X-Forwarded-Proto https', async () => {
    const answer = await httpsGet(`${gateway.url}/kept/y`, ca.pem)
    expect(answer.status).toBe(200)
    const seen = JSON.parse(answer.body) as { headers: Record<string, string> }
    expect(seen.headers['x-forwarded-proto']).toBe('https')
    expect(seen.headers.host).toBe(`127.0.0.1:${port}`)
  })

  it('serves curl --http2 (nghttp2) over h2', async () => {
    const { stdout } = await run('curl', ['--http2', '--cacert', join(ca.dir, 'ca.crt'), '--resolve', `gateway.test:${port}:127.0.0.1`, '-s', '-o', '/dev/null', '-w', '%{http_version} %{http_code}', `https://gateway.test:${port}/kept/curl`], { timeout: 10_000 })
    expect(stdout).toBe('2 200')
  })

  it('runs an HTTP/2 request through a rate limit, the cache and a breaker as it would HTTP/1.1', async () => {
    const session = await openHttp2(gateway.url, ca.pem)
    try {
      const limited = []
      for (let i = 0; i < 4; i++) limited.push(await http2Get(session, '/limited/x'))
      expect(limited.map((a) => a.status)).toEqual([200, 200, 200, 429])
      expect(limited[3]?.headers['content-type']).toMatch(/^application\/problem\+json/)
      expect((JSON.parse(limited[3]?.body ?? '{}') as { code: string }).code).toBe('rate_limited')

      const before = upstream.requests.length
      const cached = [await http2Get(session, '/cached/a'), await http2Get(session, '/cached/a')]
      expect(cached.map((a) => a.status)).toEqual([200, 200])
      expect(String(cached[1]?.headers['cache-status'])).toMatch(/hit/)
      expect(upstream.requests.length - before).toBe(1)

      const statuses: number[] = []
      for (let i = 0; i < 6; i++) statuses.push((await http2Get(session, '/failing/x')).status)
      expect(statuses.slice(0, 3)).toEqual([500, 500, 500])
      expect(statuses.at(-1)).toBe(503)
      const open = await http2Get(session, '/failing/x')
      expect((JSON.parse(open.body) as { code: string }).code).toBe('circuit_open')
    } finally {
      session.close()
    }
  })

  it('refuses an HTTP/2 body over --max-body with a problem, and the session serves on', async () => {
    const session = await openHttp2(gateway.url, ca.pem)
    try {
      const refused = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const stream = session.request({ ':method': 'POST', ':path': '/users/upload', 'content-length': String(20 * 1024 * 1024) })
        let status = 0
        let body = ''
        stream.on('response', (h) => (status = Number(h[':status'])))
        stream.on('data', (chunk: Buffer) => (body += chunk.toString()))
        stream.on('close', () => resolve({ status, body }))
        stream.on('error', reject)
        stream.write(Buffer.alloc(1024))
      })
      expect(refused.status).toBe(413)
      expect((JSON.parse(refused.body) as { code: string }).code).toBe('payload_too_large')
      expect((await http2Get(session, '/users/after')).status).toBe(200)
    } finally {
      session.close()
    }
  })

  it('keeps WebSocket working over HTTP/1.1 on the TLS port', async () => {
    const socket = new WebSocket(`wss://127.0.0.1:${port}/ws/chat`, { ca: ca.pem, servername: 'gateway.test' } as WebSocket.ClientOptions)
    const message = await new Promise<string>((resolve, reject) => {
      socket.once('message', (data: Buffer) => resolve(data.toString()))
      socket.once('error', reject)
    })
    socket.close()
    expect((JSON.parse(message) as { upstream: string }).upstream).toBe('ws')
  })

  it('says the protocol in the access log and counts HTTP/2 requests in the route metrics', async () => {
    const session = await openHttp2(gateway.url, ca.pem)
    await http2Get(session, '/users/logged-h2')
    session.close()
    await httpsGet(`${gateway.url}/users/logged-h1`, ca.pem)
    const lines = await waitFor(async () => {
      const text = await readFile(accessLog, 'utf8').catch(() => '')
      const parsed = text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { path: string; protocol: string })
      return parsed.some((l) => l.path === '/users/logged-h1') && parsed.some((l) => l.path === '/users/logged-h2') ? parsed : undefined
    }, { what: 'both lines in the access log' })
    expect(lines.find((l) => l.path === '/users/logged-h2')?.protocol).toBe('HTTP/2')
    expect(lines.find((l) => l.path === '/users/logged-h1')?.protocol).toBe('HTTP/1.1')
    const metrics = await (await request(`${gateway.adminUrl}/metrics`)).body.text()
    expect(metrics).toMatch(/portico_requests_total\{route="failing",status="503"\} [1-9]/)
    expect(metrics).toMatch(/portico_tls_certificate_expiry_seconds\{certificate="api"\} \d{5,}/)
    expect(metrics).toMatch(/portico_tls_certificates_refused 0/)
  })

  it('sends plain HTTP on the redirect port to the HTTPS URL, probes excepted', async () => {
    const redirectUrl = gateway.portico.redirectUrl ?? ''
    const answer = await new Promise<{ status: number; location: string | undefined }>((resolve, reject) => {
      httpRequest(`${redirectUrl}/users/me?x=1`, { headers: { host: 'gateway.test' } }, (response) => {
        response.resume()
        resolve({ status: response.statusCode ?? 0, location: response.headers.location })
      })
        .on('error', reject)
        .end()
    })
    expect(answer).toEqual({ status: 308, location: `https://gateway.test:${port}/users/me?x=1` })
    const probe = await request(`${redirectUrl}/readyz`)
    expect(probe.statusCode).toBe(200)
    await probe.body.dump()
  })
})

describe('certificate files change under a running gateway', () => {
  it('serves a renewed certificate to new handshakes within a second while an old connection keeps streaming', async () => {
    const session = await openHttp2(gateway.url, ca.pem)
    const streamed = http2Get(session, '/slow/stream')
    const renewed = ca.issue(['gateway.test', 'localhost'])
    expect(fingerprintOf(renewed.cert)).not.toBe(fingerprintOf(first.cert))
    const started = Date.now()
    writePair(dir, 'default', renewed)
    await waitFor(async () => (await handshake(port, ca.pem, { servername: 'gateway.test' })).certificate.fingerprint256 === fingerprintOf(renewed.cert), { timeoutMs: 3_000, what: 'the renewed certificate on a new handshake' })
    expect(Date.now() - started).toBeLessThan(1_500)
    const answer = await streamed
    session.close()
    expect(answer.status).toBe(200)
    expect(answer.body.split('\n').filter(Boolean)).toHaveLength(60)
  })

  it('refuses a key that is not the certificate\'s and an expired certificate, keeps the last good one, and says so', async () => {
    writeFileSync(join(dir, 'api.crt'), ca.issue(['api.test']).cert) // its key stays the old one
    writePair(dir, 'old', ca.issue(['old.test'], { expired: true }))
    const ready = async () => (await (await request(`${gateway.adminUrl}/readyz`)).body.json()) as { status: string; components: { tls: { status: string; detail: string } } }
    const report = await waitFor(async () => {
      const r = await ready()
      return r.components.tls.detail?.includes('old.crt') && r.components.tls.detail.includes('api.key') ? r : undefined
    }, { what: 'both refusals on /readyz' })
    expect(report.components.tls.status).toBe('degraded')
    expect(report.components.tls.detail).toMatch(/api\.key: this key is not the key of .*api\.crt/)
    expect(report.components.tls.detail).toMatch(/old\.crt: expired on 2020-02-01/)
    expect((await handshake(port, ca.pem, { servername: 'api.test' })).certificate.fingerprint256).toBe(fingerprintOf(apiPair.cert))
    expect((await handshake(port, ca.pem, { servername: 'old.test' })).certificate.subjectaltname).toBe('DNS:gateway.test, DNS:localhost')
    const metrics = await (await request(`${gateway.adminUrl}/metrics`)).body.text()
    expect(metrics).toMatch(/portico_tls_certificates_refused 2/)

    rmSync(join(dir, 'old.crt'))
    rmSync(join(dir, 'old.key'))
    writePair(dir, 'api', apiPair)
    await waitFor(async () => (await ready()).components.tls.status === 'ok', { what: 'tls ok again' })
  })
})

describe('a TLS gateway that stops', () => {
  it('lets an HTTP/2 stream under way finish, sends its session GOAWAY and closes without waiting out the drain timeout', async () => {
    const own = await startGateway({ 'r.yaml': routeFile('slow', '/slow', slow.url) }, { 'tls-dir': dir, 'drain-timeout': '20s' })
    const session = await openHttp2(own.url, ca.pem)
    const goaway = new Promise<number>((resolve) => session.once('goaway', (code: number) => resolve(code)))
    const streaming = http2Get(session, '/slow/last')
    await waitFor(() => slow.requests.some((r) => r.url === '/slow/last'), { what: 'the stream upstream' })
    const started = Date.now()
    await own.close()
    expect(Date.now() - started).toBeLessThan(10_000)
    expect(await goaway).toBe(0)
    const answer = await streaming
    expect(answer.status).toBe(200)
    expect(answer.body.split('\n').filter(Boolean)).toHaveLength(60)
  })
})

describe('portico start with TLS', () => {
  it('serves h2 from --workers 2, each worker with the certificates', async () => {
    const routes = await makeRoutesDir({ 'r.yaml': routeFile('users', '/users', upstream.url) })
    const child = await spawnGateway(routes, {}, ['--workers', '2', '--tls-dir', dir])
    try {
      expect(child.url).toMatch(/^https:/)
      const session = await openHttp2(child.url, ca.pem)
      const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => http2Get(session, `/users/${i}`)))
      session.close()
      expect(answers.every((a) => a.status === 200)).toBe(true)
      const plain = await Promise.all(Array.from({ length: 10 }, () => httpsGet(`${child.url}/users/h1`, ca.pem)))
      expect(new Set(plain.map((a) => a.status))).toEqual(new Set([200]))
    } finally {
      expect(await child.stop()).toBe(0)
      await rm(routes, { recursive: true, force: true })
    }
  }, 60_000)

  it('refuses to start when no certificate can be served, saying why', async () => {
    const bad = mkdtempSync(join(tmpdir(), 'portico-tls-bad-'))
    const other = ca.issue(['bad.test'])
    writePair(bad, 'default', { cert: ca.issue(['bad.test']).cert, key: other.key })
    const routes = await makeRoutesDir({ 'r.yaml': 'routes: []\n' })
    try {
      const child = runCli(['start', '--routes', routes, '--port', '0', '--admin-port', '0', '--tls-dir', bad])
      let output = ''
      child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()))
      child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()))
      const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
      expect(code).toBe(2)
      expect(output).toMatch(/no TLS certificate can be served: .*default\.key: this key is not the key of .*default\.crt/)
    } finally {
      rmSync(bad, { recursive: true, force: true })
      await rm(routes, { recursive: true, force: true })
    }
  })

  it('portico validate --tls-dir checks the certificates offline', async () => {
    const checked = mkdtempSync(join(tmpdir(), 'portico-tls-check-'))
    writePair(checked, 'good', ca.issue(['good.test', '*.good.test']))
    writePair(checked, 'old', ca.issue(['old.test'], { expired: true }))
    writeFileSync(join(checked, 'nokey.crt'), ca.issue(['nokey.test']).cert)
    try {
      const child = runCli(['validate', '--tls-dir', checked])
      let stdout = ''
      let stderr = ''
      child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()))
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
      const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
      expect(code).toBe(1)
      expect(stdout).toMatch(/ok: good: good\.test, \*\.good\.test \(expires 20\d\d-/)
      expect(stderr).toMatch(/old\.crt: expired on 2020-02-01/)
      expect(stderr).toMatch(/nokey\.key: cannot be read \(ENOENT\)/)
    } finally {
      rmSync(checked, { recursive: true, force: true })
    }
  })
})
