import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { makeRoutesDir, spawnGateway, type GatewayProcess } from '../support/gateway.js'
import { waitFor } from '../support/poll.js'
import { startUpstream, type Upstream } from '../support/upstream.js'

// A filesystem of its own that the test can fill: a small tmpfs (root may mount one; elsewhere the test says why it
// cannot run).
const disk = mkdtempSync(join(tmpdir(), 'portico-full-disk-'))
let mountRefused: string | undefined
try {
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', disk], { stdio: 'pipe' })
} catch (error) {
  mountRefused = `a tmpfs cannot be mounted here (${(error as Error).message.split('\n')[0]})`
}

/** Fills the filesystem at `dir` to the last byte. */
function fill(dir: string): void {
  try {
    writeFileSync(join(dir, 'filler'), Buffer.alloc(2 * 1024 * 1024))
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error
  }
}

describe.skipIf(mountRefused !== undefined)(`the access log on a disk that fills up${mountRefused ? ` (skipped: ${mountRefused})` : ''}`, () => {
  const logFile = join(disk, 'access.log')
  let upstream: Upstream
  let gateway: GatewayProcess
  beforeAll(async () => {
    upstream = await startUpstream('plain')
    const routes = await makeRoutesDir({ 'r.yaml': `routes:\n  - name: plain\n    prefix: /plain\n    upstreams: [${upstream.url}]\n` })
    gateway = await spawnGateway(routes, { PORTICO_ACCESS_LOG: logFile })
  })
  afterAll(async () => {
    await gateway?.stop('SIGKILL')
    await upstream?.close()
    if (mountRefused === undefined) execFileSync('umount', [disk])
    rmSync(disk, { recursive: true, force: true })
  })

  const get = async (url: string, id?: string) => {
    const response = await request(url, { headers: id ? { 'x-request-id': id } : {}, headersTimeout: 2_000, bodyTimeout: 2_000 })
    return { status: response.statusCode, text: await response.body.text() }
  }
  const dropped = async () => Number(/^portico_access_log_dropped_lines_total (\d+)/m.exec((await get(`${gateway.adminUrl}/metrics`)).text)?.[1])

  it('keeps both ports answering, drops and counts the lines it cannot write, and writes again once there is room', async () => {
    fill(disk)
    // 1 500 requests with the disk full (batches of 16 KB, flushed at least each second): every one answered, and the
    // admin port too, each within 2 s.
    for (let round = 0; round < 15; round++) {
      const answers = await Promise.all(Array.from({ length: 100 }, (_, i) => get(`${gateway.url}/plain/${round}-${i}`)))
      expect(answers.map((a) => a.status)).toEqual(Array(100).fill(200))
      expect((await get(`${gateway.adminUrl}/healthz`)).status).toBe(200)
    }
    await waitFor(async () => (await dropped()) > 0, { timeoutMs: 5_000, what: 'dropped lines to be counted' })
    expect(gateway.output().match(/access log lines dropped/g)).toHaveLength(1) // one line a minute at most

    rmSync(join(disk, 'filler'))
    const id = `after-room-${Date.now()}`
    expect((await get(`${gateway.url}/plain/after`, id)).status).toBe(200)
    await waitFor(() => readFileSync(logFile, 'utf8').includes(`"requestId":"${id}"`), { timeoutMs: 5_000, what: 'the log to be written again' })
    expect(gateway.child.exitCode).toBeNull()
    expect(await gateway.stop('SIGTERM')).toBe(0)
  })
})
