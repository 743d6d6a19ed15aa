import { Pool, request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startGateway, type TestGateway } from '../support/gateway.js'
import { waitFor } from '../support/poll.js'
import { freePort } from '../support/ports.js'
import { startUpstream, type Upstream } from '../support/upstream.js'

const splitRoute = (name: string, prefix: string, users: Upstream, canary: string, weights: [number, number], ...extra: string[]) => `routes:
  - name: ${name}
    prefix: ${prefix}
    split:
      - { upstreams: ["${users.url}"], weight: ${weights[0]}, name: users }
      - { upstreams: ["${canary}"], weight: ${weights[1]}, name: canary }
${extra.map((line) => `    ${line}\n`).join('')}`

/** `count` GETs of `path`, `concurrency` at a time over kept-alive connections: each answer's status and upstream. */
async function load(gateway: TestGateway, path: string, count: number, headersOf: (i: number) => Record<string, string> = () => ({}), concurrency = 32) {
  const pool = new Pool(gateway.url, { connections: concurrency })
  const answers: { status: number; upstream: string | undefined }[] = new Array(count)
  let next = 0
  const worker = async () => {
    for (let i = next++; i < count; i = next++) {
      const r = await pool.request({ path, method: 'GET', headers: headersOf(i) })
      const text = await r.body.text()
      answers[i] = { status: r.statusCode, upstream: r.statusCode === 200 ? (JSON.parse(text) as { upstream: string }).upstream : undefined }
    }
  }
  try {
    await Promise.all(Array.from({ length: concurrency }, worker))
  } finally {
    await pool.close()
  }
  return answers
}

const metrics = (gateway: TestGateway) => request(`${gateway.adminUrl}/metrics`).then((r) => r.body.text())

describe('a weighted split over real upstreams', () => {
  let users: Upstream
  let canary: Upstream
  let gateway: TestGateway
  let second: TestGateway
  let deadPort: number
  beforeAll(async () => {
    ;[users, canary, deadPort] = await Promise.all([startUpstream('users'), startUpstream('canary'), freePort()])
    const files = {
      'split.yaml': splitRoute('users-api', '/api/users', users, canary.url, [90, 10]),
      'sticky.yaml': splitRoute('sticky', '/sticky', users, canary.url, [90, 10], 'stickyOn: header:X-User'),
      'moving.yaml': splitRoute('moving', '/moving', users, canary.url, [100, 0]),
      'down.yaml': splitRoute('down', '/down', users, `http://127.0.0.1:${deadPort}`, [50, 50], 'circuitBreaker: { volumeThreshold: 4, errorThresholdPercentage: 50, resetTimeout: 10m }'),
    }
    ;[gateway, second] = await Promise.all([startGateway(files), startGateway(files)])
  })
  afterAll(async () => {
    await Promise.all([gateway?.close(), second?.close()])
    await Promise.all([users?.close(), canary?.close()])
  })

  it('lands a 90/10 split within 1.5 points over 10 000 requests, counted by target', async () => {
    const answers = await load(gateway, '/api/users/1', 10_000)
    expect(answers.filter((a) => a.status !== 200)).toEqual([])
    const canaryShare = answers.filter((a) => a.upstream === 'canary').length / answers.length
    expect(Math.abs(canaryShare - 0.1)).toBeLessThanOrEqual(0.015)
    const text = await metrics(gateway)
    const counted = (target: string) => Number(new RegExp(`^portico_split_requests_total\\{route="users-api",target="${target}"\\} (\\d+)`, 'm').exec(text)?.[1])
    expect(counted('canary')).toBe(answers.filter((a) => a.upstream === 'canary').length)
    expect(counted('users') + counted('canary')).toBe(10_000)
  })

  it('keeps a sticky key on one target, the same one on another replica, and moves only the keys a weight change must', async () => {
    const keys = Array.from({ length: 1_000 }, (_, i) => `user-${i}`)
    const onA = await load(gateway, '/sticky/me', keys.length, (i) => ({ 'x-user': keys[i] as string }))
    const onB = await load(second, '/sticky/me', keys.length, (i) => ({ 'x-user': keys[i] as string }))
    const againOnA = await load(gateway, '/sticky/me', keys.length, (i) => ({ 'x-user': keys[i] as string }))
    expect(onB.map((a) => a.upstream)).toEqual(onA.map((a) => a.upstream))
    expect(againOnA.map((a) => a.upstream)).toEqual(onA.map((a) => a.upstream))
    const canaryShare = onA.filter((a) => a.upstream === 'canary').length / keys.length
    expect(canaryShare).toBeGreaterThan(0.06)
    expect(canaryShare).toBeLessThan(0.14)

    // 90/10 → 70/30 on replica A: keys go from users to the canary only, about the 20 points the share grew by
    await gateway.writeRoutes('sticky.yaml', splitRoute('sticky', '/sticky', users, canary.url, [70, 30], 'stickyOn: header:X-User'))
    const shares = async () => (await load(gateway, '/sticky/me', keys.length, (i) => ({ 'x-user': keys[i] as string }))).map((a) => a.upstream)
    const after = await waitFor(async () => {
      const now = await shares()
      return now.filter((u) => u === 'canary').length > keys.length * 0.22 ? now : undefined
    }, { what: 'the new weights to apply' })
    const moved = after.flatMap((upstream, i) => (upstream === onA[i]?.upstream ? [] : [upstream]))
    expect(new Set(moved)).toEqual(new Set(['canary']))
    expect(moved.length / keys.length).toBeGreaterThan(0.12)
    expect(moved.length / keys.length).toBeLessThan(0.28)
  })

  it('moves a canary\'s weight by a file edit under load without losing a request', async () => {
    const answers: { status: number; upstream: string | undefined }[] = []
    const running = (async () => {
      // bounded: at most 40 rounds of 100
      for (let round = 0; round < 40; round++) {
        const batch = await load(gateway, '/moving/x', 100, () => ({}), 8)
        answers.push(...batch)
        if (batch.filter((a) => a.upstream === 'canary').length > 30) break
      }
    })()
    await waitFor(() => answers.length >= 300 || undefined, { what: 'load before the edit' })
    await gateway.writeRoutes('moving.yaml', splitRoute('moving', '/moving', users, canary.url, [50, 50]))
    await running
    expect(answers.filter((a) => a.status !== 200)).toEqual([])
    expect(answers.slice(0, 300).filter((a) => a.upstream === 'canary')).toEqual([])
    expect(answers.slice(-100).filter((a) => a.upstream === 'canary').length).toBeGreaterThan(30)
  })

  it('gives the share of a target whose breaker opened to the other, and says so in the metrics, the admin API and the status feed', async () => {
    // The canary's only instance refuses connections: its own breaker opens after a few failures.
    await waitFor(
      async () => {
        await load(gateway, '/down/x', 20, () => ({}), 4)
        return /^portico_circuit_breaker_state\{route="down\/canary"\} 2/m.test(await metrics(gateway)) || undefined
      },
      { what: 'the canary\'s breaker to open' },
    )
    const answers = await load(gateway, '/down/x', 200)
    expect(answers.filter((a) => a.status !== 200 || a.upstream !== 'users')).toEqual([])
    const text = await metrics(gateway)
    expect(text).toMatch(/^portico_split_target_available\{route="down",target="canary"\} 0/m)
    expect(text).toMatch(/^portico_split_target_available\{route="down",target="users"\} 1/m)
    // the users side has a breaker of its own, still closed
    expect(text).toMatch(/^portico_circuit_breaker_state\{route="down\/users"\} 0/m)
    const routes = (await request(`${gateway.adminUrl}/admin/routes`).then((r) => r.body.json())) as { routes: { name: string; split?: { targets: { name: string; available: boolean }[] } }[] }
    expect(routes.routes.find((r) => r.name === 'down')?.split?.targets).toMatchObject([
      { name: 'users', available: true },
      { name: 'canary', available: false },
    ])
    // what the status page shows of the route
    const snapshot = (await request(`${gateway.adminUrl}/admin/snapshot`).then((r) => r.body.json())) as { routes: { name: string; target: string; cells: Record<string, unknown> }[] }
    const down = snapshot.routes.find((r) => r.name === 'down')
    expect(down?.target).toBe('split: users 100% · canary 0% (cannot take requests: its share goes to the others)')
    expect(down?.cells.breaker).toMatchObject({ mark: 'open', note: 'target canary' })
    expect(snapshot.routes.find((r) => r.name === 'users-api')?.target).toBe('split: users 90% · canary 10%')
  })
})
