import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startGateway, type TestGateway } from '../support/gateway.js'
import { startUpstream, type Upstream } from '../support/upstream.js'

describe('load balancing through the gateway', () => {
  let upstreams: Upstream[]
  let slow: Upstream
  let gateway: TestGateway
  beforeAll(async () => {
    upstreams = await Promise.all(['one', 'two', 'three'].map((n) => startUpstream(n)))
    slow = await startUpstream('slow', (_req, res) => setTimeout(() => res.end('{"upstream":"slow"}'), 300).unref())
    const list = `[${upstreams.map((u) => u.url).join(', ')}]`
    gateway = await startGateway({
      'lb.yaml': `
routes:
  - { name: rr, prefix: /rr, upstreams: ${list} }
  - { name: rnd, prefix: /rnd, loadBalancer: random, upstreams: ${list} }
  - { name: hash, prefix: /hash, loadBalancer: consistent-hash, hashOn: header:X-User, upstreams: ${list} }
  - { name: least, prefix: /least, loadBalancer: least-request, upstreams: [${slow.url}, ${upstreams[0]?.url}] }
`,
    })
  })
  afterAll(async () => {
    await gateway?.close()
    await Promise.all([...(upstreams ?? []), slow].map((u) => u?.close()))
  })

  const hit = async (path: string, headers: Record<string, string> = {}) =>
    ((await (await request(gateway.url + path, { headers })).body.json()) as { upstream: string }).upstream

  it('round-robin spreads requests evenly over real instances', async () => {
    const seen: string[] = []
    for (let i = 0; i < 30; i++) seen.push(await hit('/rr'))
    expect(seen.filter((s) => s === 'one')).toHaveLength(10)
    expect(seen.filter((s) => s === 'two')).toHaveLength(10)
    expect(seen.filter((s) => s === 'three')).toHaveLength(10)
  })

  it('random reaches every instance', async () => {
    const seen = new Set<string>()
    for (let i = 0; i < 60 && seen.size < 3; i++) seen.add(await hit('/rnd'))
    expect(seen).toEqual(new Set(['one', 'two', 'three']))
  })

  it('consistent-hash sends one user to one instance and spreads users', async () => {
    const placement = new Map<string, string>()
    for (let u = 0; u < 20; u++) placement.set(`u${u}`, await hit('/hash', { 'x-user': `u${u}` }))
    for (let u = 0; u < 20; u++) expect(await hit('/hash', { 'x-user': `u${u}` })).toBe(placement.get(`u${u}`))
    expect(new Set(placement.values()).size).toBeGreaterThan(1)
  })

  it('least-request steers concurrent requests away from the busy instance', async () => {
    const results = await Promise.all(Array.from({ length: 12 }, () => hit('/least')))
    const toSlow = results.filter((r) => r === 'slow').length
    expect(toSlow).toBeGreaterThanOrEqual(1)
    expect(toSlow).toBeLessThanOrEqual(3)
  })
})
