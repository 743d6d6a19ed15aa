import { mkdtempSync, rmSync } from 'node:fs'
import { constants, type ClientHttp2Session } from 'node:http2'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { TestCa, writePair } from '../support/certificates.js'
import { startGateway, type TestGateway } from '../support/gateway.js'
import { waitFor } from '../support/poll.js'
import { FLAG, FRAME, RawHttp2, SETTING, field, frame, requestBlock, settings } from '../support/raw-http2.js'
import { routeFile } from '../support/routes.js'
import { http2Get, openHttp2 } from '../support/tls-clients.js'
import { startUpstream, type Upstream } from '../support/upstream.js'

const ENHANCE_YOUR_CALM = constants.NGHTTP2_ENHANCE_YOUR_CALM

let ca: TestCa
let dir: string
let gateway: TestGateway
let ok: Upstream
let held: Upstream
let big: Upstream
let port: number
let inFlight = 0
let mostInFlight = 0
const waiting: (() => void)[] = []
let polite: ClientHttp2Session

beforeAll(async () => {
  ca = TestCa.create()
  dir = mkdtempSync(join(tmpdir(), 'portico-h2-'))
  writePair(dir, 'default', ca.issue(['gateway.test']))
  ok = await startUpstream('ok')
  held = await startUpstream('held', (req, res) => {
    // Only the concurrency test's streams (/held/cN) are counted: the rapid reset test's may still be arriving.
    const counted = /\/c\d+$/.test(req.url ?? '')
    if (counted) mostInFlight = Math.max(mostInFlight, ++inFlight)
    waiting.push(() => {
      if (counted) inFlight--
      res.end('released')
    })
  })
  big = await startUpstream('big', (_req, res) => void res.end(Buffer.alloc(1024 * 1024, 'x')))
  gateway = await startGateway(
    { 'r.yaml': routeFile('ok', '/ok', ok.url) + routeFile('held', '/held', held.url, 'timeout: { response: 30s }').replace('routes:\n', '') + routeFile('big', '/big', big.url).replace('routes:\n', '') },
    { 'tls-dir': dir },
    { PORTICO_HTTP2_STALL_TIMEOUT: '1s' },
  )
  port = Number(new URL(gateway.url).port)
  polite = await openHttp2(gateway.url, ca.pem)
})

afterAll(async () => {
  polite?.close()
  for (const release of waiting.splice(0)) release()
  await gateway?.close()
  await Promise.all([ok, held, big].map((u) => u?.close()))
  rmSync(dir, { recursive: true, force: true })
  ca?.remove()
})

const releaseAll = () => {
  for (const release of waiting.splice(0)) release()
}

/** A well-behaved client, on its own connection, is served throughout. */
async function politeClientServed(): Promise<void> {
  const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => http2Get(polite, `/ok/${i}`)))
  expect(answers.map((a) => a.status)).toEqual(Array(10).fill(200))
}

async function cutCount(reason: string): Promise<number> {
  const text = await (await request(`${gateway.adminUrl}/metrics`)).body.text()
  return Number(new RegExp(`portico_http2_cut_total\\{reason="${reason}"\\} (\\d+)`).exec(text)?.[1] ?? 0)
}

describe('HTTP/2 abuse is cut while other clients are served', () => {
  it('rapid reset (CVE-2023-44487): streams opened and cancelled in a loop get GOAWAY ENHANCE_YOUR_CALM, and few reach the upstream', async () => {
    const before = held.requests.length
    const attacker = await RawHttp2.open(port)
    const burst: Buffer[] = []
    for (let i = 0; i < 2_000; i++) {
      const stream = 1 + i * 2
      burst.push(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, stream, requestBlock(`/held/${i}`)), frame(FRAME.RST_STREAM, 0, stream, Buffer.from([0, 0, 0, 8])))
    }
    await attacker.write(Buffer.concat(burst))
    try {
      await waitFor(() => attacker.goaway() !== undefined || attacker.destroyed, { what: 'the attacker cut' })
      await attacker.closed
      expect(attacker.goaway()).toBe(ENHANCE_YOUR_CALM)
      // The budget's burst, and what was already under way when its last token went.
      expect(held.requests.length - before).toBeLessThan(300)
      await politeClientServed()
      expect(await cutCount('rapid_reset')).toBeGreaterThanOrEqual(1)
      // A reset stream is a client gone (499), and its upstream request is given up: none is left holding a connection.
      const text = await (await request(`${gateway.adminUrl}/metrics`)).body.text()
      expect(Number(/portico_requests_total\{route="held",status="499"\} (\d+)/.exec(text)?.[1])).toBeGreaterThanOrEqual(100)
      expect(text).not.toMatch(/portico_requests_total\{route="held",status="200"\}/)
      await waitFor(async () => /portico_requests_in_flight\{route="held"\} 0/.test(await (await request(`${gateway.adminUrl}/metrics`)).body.text()), { what: 'no held request left in flight' })
    } finally {
      releaseAll()
    }
  })

  it('more streams than SETTINGS_MAX_CONCURRENT_STREAMS (100) are refused, never sent upstream', async () => {
    expect(polite.remoteSettings.maxConcurrentStreams).toBe(100)
    mostInFlight = 0
    const attacker = await RawHttp2.open(port)
    const opens: Buffer[] = []
    for (let i = 0; i < 150; i++) opens.push(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1 + i * 2, requestBlock(`/held/c${i}`)))
    await attacker.write(Buffer.concat(opens))
    try {
      await waitFor(() => inFlight >= 100 || attacker.goaway() !== undefined, { what: '100 streams upstream' })
      await politeClientServed()
      expect(mostInFlight).toBeLessThanOrEqual(100)
      const refused = [...attacker.resets().values()]
      expect(refused.length + (attacker.goaway() === undefined ? 0 : 50)).toBeGreaterThanOrEqual(50)
    } finally {
      attacker.close()
      releaseAll()
    }
  })

  it('an endless header block (CONTINUATION flood, CVE-2024-27316) ends the connection; nothing reaches the upstream', async () => {
    const before = ok.requests.length
    const attacker = await RawHttp2.open(port)
    const flood: Buffer[] = [frame(FRAME.HEADERS, 0, 1, requestBlock('/ok/flood'))]
    for (let i = 0; i < 20_000; i++) flood.push(frame(FRAME.CONTINUATION, 0, 1, field(`x-flood-${i % 100}`, 'y'.repeat(100))))
    await attacker.write(Buffer.concat(flood))
    await waitFor(() => attacker.goaway() !== undefined || attacker.destroyed, { timeoutMs: 10_000, what: 'the connection ended' })
    attacker.close()
    expect(ok.requests.length).toBe(before)
    await politeClientServed()
  })

  it('a request over the header list limit (32 KiB) is refused alone: the connection serves on', async () => {
    const session = await openHttp2(gateway.url, ca.pem)
    try {
      const headers = Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`x-big-${i}`, 'z'.repeat(400)]))
      const outcome = await http2Get(session, '/ok/big-headers', headers).then(
        (answer) => answer.status,
        (error: Error) => error.message,
      )
      expect(outcome === 431 || /ENHANCE_YOUR_CALM|code 11|PROTOCOL_ERROR|REFUSED/.test(String(outcome))).toBe(true)
      await politeClientServed()
    } finally {
      session.close()
    }
  })

  it('PING and SETTINGS floods get GOAWAY ENHANCE_YOUR_CALM', async () => {
    const pinger = await RawHttp2.open(port)
    const pings: Buffer[] = []
    for (let i = 0; i < 1_000; i++) pings.push(frame(FRAME.PING, 0, 0, Buffer.alloc(8, i % 256)))
    await pinger.write(Buffer.concat(pings))
    await waitFor(() => pinger.goaway() !== undefined, { what: 'GOAWAY for the pings' })
    expect(pinger.goaway()).toBe(ENHANCE_YOUR_CALM)
    pinger.close()

    const setter = await RawHttp2.open(port)
    const frames: Buffer[] = []
    for (let i = 0; i < 200; i++) frames.push(settings([[SETTING.MAX_CONCURRENT_STREAMS, 100 + i]]))
    await setter.write(Buffer.concat(frames))
    await waitFor(() => setter.goaway() !== undefined, { what: 'GOAWAY for the settings' })
    expect(setter.goaway()).toBe(ENHANCE_YOUR_CALM)
    setter.close()

    expect(await cutCount('ping_flood')).toBeGreaterThanOrEqual(1)
    expect(await cutCount('settings_flood')).toBeGreaterThanOrEqual(1)
    await politeClientServed()
  })

  it('a client that keeps its window at zero has its stalled stream cut after the stall timeout', async () => {
    const stalled = await RawHttp2.open(port, [[SETTING.INITIAL_WINDOW_SIZE, 0]])
    await stalled.write(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1, requestBlock('/big/file')))
    await waitFor(() => stalled.resets().get(1) !== undefined, { timeoutMs: 8_000, what: 'the stalled stream reset' })
    expect(stalled.resets().get(1)).toBe(ENHANCE_YOUR_CALM)
    expect(stalled.frames.filter((f) => f.type === FRAME.DATA && f.stream === 1).reduce((n, f) => n + f.payload.length, 0)).toBe(0)
    expect(await cutCount('stalled_stream')).toBeGreaterThanOrEqual(1)
    stalled.close()
    await politeClientServed()
  })
})
