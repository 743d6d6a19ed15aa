import { Redis } from 'ioredis'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { makeRoutesDir, spawnGateway, startGateway, type GatewayProcess, type TestGateway } from '../../support/gateway.js'
import { waitFor } from '../../support/poll.js'
import { startRedis, type TestRedis } from '../../support/redis.js'
import { startUpstream, type Upstream } from '../../support/upstream.js'

const limited = (name: string, upstream: string, rateLimit: string) => `routes:\n  - name: ${name}\n    prefix: /${name}\n    upstreams: [${upstream}]\n    rateLimit: ${rateLimit}\n`
const replicasSeen = async (adminUrl: string) =>
  ((await (await request(`${adminUrl}/readyz`)).body.json()) as { components: { state: { replicas: number; status: string } } }).components.state

describe('a rate limit shared by three replicas', () => {
  const redisUrl = inject('redisUrl')
  const route = `shared-${process.pid}`
  let upstream: Upstream
  let replicas: GatewayProcess[]
  beforeAll(async () => {
    upstream = await startUpstream('limited')
    const dir = await makeRoutesDir({ 'r.yaml': limited(route, upstream.url, '{ key: route, limits: [{ limit: 9, window: 1h }] }') })
    replicas = await Promise.all([0, 1, 2].map(() => spawnGateway(dir, { REDIS_URL: redisUrl })))
  })
  afterAll(async () => {
    await Promise.all((replicas ?? []).map((r) => r.stop('SIGKILL')))
    await upstream?.close()
  })

  it('admits exactly the limit across replicas, then answers 429 with Retry-After and RateLimit headers on every replica', async () => {
    const statuses: number[] = []
    for (let i = 0; i < 15; i++) {
      const replica = replicas[i % 3] as GatewayProcess
      const response = await request(`${replica.url}/${route}`)
      await response.body.dump()
      statuses.push(response.statusCode)
      if (i === 0) {
        expect(response.headers['ratelimit-policy']).toBe('9;w=3600')
        expect(response.headers.ratelimit).toMatch(/^limit=9, remaining=8, reset=\d+$/)
      }
    }
    expect(statuses.filter((s) => s === 200)).toHaveLength(9)
    expect(statuses.slice(9)).toEqual([429, 429, 429, 429, 429, 429])
    expect(upstream.requests).toHaveLength(9)
    for (const replica of replicas) {
      const response = await request(`${replica.url}/${route}`)
      const body = (await response.body.json()) as { code: string }
      expect(response.statusCode).toBe(429)
      expect(body.code).toBe('rate_limited')
      expect(Number(response.headers['retry-after'])).toBeGreaterThan(3000)
      expect(response.headers['content-type']).toMatch(/^application\/problem\+json/)
    }
  })
})

describe('a busy key on three replicas under concurrent load (own Redis)', () => {
  const limit = 3000
  let redis: TestRedis
  let upstream: Upstream
  let replicas: GatewayProcess[]
  beforeAll(async () => {
    redis = await startRedis()
    upstream = await startUpstream('busy')
    const dir = await makeRoutesDir({ 'r.yaml': limited('busy', upstream.url, `{ key: route, limits: [{ limit: ${limit}, window: 1h }] }`) })
    replicas = await Promise.all([0, 1, 2].map(() => spawnGateway(dir, { REDIS_URL: redis.url })))
    for (const replica of replicas) await waitFor(async () => (await replicasSeen(replica.adminUrl)).replicas === 3, { timeoutMs: 10_000, what: 'the replicas to count each other' })
  })
  afterAll(async () => {
    await Promise.all((replicas ?? []).map((r) => r.stop('SIGKILL')))
    await redis?.stop()
    await upstream?.close()
  })

  it('admits exactly the limit, with far fewer Redis commands than requests, then 429 on every replica', async () => {
    const client = new Redis(redis.url)
    // rate-limiter-flexible counts with one script call (EVALSHA, EVAL the first time) per increment.
    const evalCalls = async () => {
      const stats = await client.info('commandstats')
      return ['eval', 'evalsha'].reduce((sum, command) => sum + Number(stats.match(new RegExp(`cmdstat_${command}:calls=(\\d+)`))?.[1] ?? 0), 0)
    }
    const evalsBefore = await evalCalls()
    const statuses = new Map<number, number>()
    let sent = 0
    const deadline = Date.now() + 20_000
    // 16 clients per replica, each sending one request after another, 1.2 × limit in all.
    const load = async (url: string) => {
      while (sent < limit * 1.2 && Date.now() < deadline) {
        sent++
        const response = await request(`${url}/busy`)
        await response.body.dump()
        statuses.set(response.statusCode, (statuses.get(response.statusCode) ?? 0) + 1)
      }
    }
    await Promise.all(replicas.flatMap((replica) => Array.from({ length: 16 }, () => load(replica.url))))

    expect(sent).toBeGreaterThanOrEqual(limit * 1.2)
    expect(Object.fromEntries(statuses)).toEqual({ 200: limit, 429: sent - limit })
    expect(upstream.requests).toHaveLength(limit)
    expect((await evalCalls()) - evalsBefore).toBeLessThan(sent / 2)
    client.disconnect()
    for (const replica of replicas) {
      const response = await request(`${replica.url}/busy`)
      await response.body.dump()
      expect(response.statusCode).toBe(429)
    }
  })
})

describe('rate limit keys (one replica with Redis)', () => {
  const redisUrl = inject('redisUrl')
  let upstream: Upstream
  let gateway: TestGateway
  beforeAll(async () => {
    upstream = await startUpstream('k')
    gateway = await startGateway(
      {
        'r.yaml': [
          limited(`ip-${process.pid}`, upstream.url, '{ key: ip, limits: [{ limit: 2, window: 1h }] }'),
          limited(`key-${process.pid}`, upstream.url, '{ key: "header:X-Api-Key", limits: [{ limit: 1, window: 1h }] }').replace('routes:\n', ''),
          limited(`multi-${process.pid}`, upstream.url, '{ key: route, limits: [{ limit: 50, window: 1s }, { limit: 3, window: 1h }] }').replace('routes:\n', ''),
          limited(`refused-${process.pid}`, upstream.url, '{ key: route, limits: [{ limit: 2, window: 1h }, { limit: 1, window: 1s }] }').replace('routes:\n', ''),
          limited(`single-${process.pid}`, upstream.url, '{ limit: 2, window: 1h, key: "header:X-Api-Key" }').replace('routes:\n', ''),
        ].join(''),
      },
      {},
      { REDIS_URL: redisUrl },
    )
  })
  afterAll(async () => {
    await gateway?.close()
    await upstream?.close()
  })
  const status = async (path: string, headers: Record<string, string> = {}) => {
    const response = await request(gateway.url + path, { headers })
    await response.body.dump()
    return response.statusCode
  }

  it('does not let a client escape an ip limit by sending X-Forwarded-For', async () => {
    const path = `/ip-${process.pid}`
    expect([await status(path), await status(path)]).toEqual([200, 200])
    for (const spoof of ['1.1.1.1', '2.2.2.2', '3.3.3.3']) expect(await status(path, { 'x-forwarded-for': spoof })).toBe(429)
  })

  it('keys by a header, one bucket per value', async () => {
    const path = `/key-${process.pid}`
    expect(await status(path, { 'x-api-key': 'a' })).toBe(200)
    expect(await status(path, { 'x-api-key': 'a' })).toBe(429)
    expect(await status(path, { 'x-api-key': 'b' })).toBe(200)
  })

  it('enforces every limit of a list', async () => {
    const path = `/multi-${process.pid}`
    expect([await status(path), await status(path), await status(path), await status(path)]).toEqual([200, 200, 200, 429])
  })

  it('takes nothing from the other windows for a request one window refuses', async () => {
    const path = `/refused-${process.pid}`
    // 1 per second and 2 per hour: the second request is refused by the 1 s window and must leave the hour alone.
    expect([await status(path), await status(path)]).toEqual([200, 429])
    await waitFor(async () => (await status(path)) === 200, { timeoutMs: 3_000, what: 'the second window to open (with the hour not used up)' })
  })

  it('takes the one-window form (limit, window, key) of the resilience issue', async () => {
    const path = `/single-${process.pid}`
    const asClient = (key: string) => status(path, { 'x-api-key': key })
    expect([await asClient('k1'), await asClient('k1'), await asClient('k1'), await asClient('k2')]).toEqual([200, 200, 429, 200])
    // a repeated header keys like its first value: repeating it evades nothing
    expect(await status(path, { 'x-api-key': ['k1', 'k3'] as unknown as string })).toBe(429)
  })
})

describe('a request one window refuses, without Redis', () => {
  it('takes nothing from the other windows', async () => {
    const upstream = await startUpstream('mem')
    const gateway = await startGateway({ 'r.yaml': limited('mem', upstream.url, '{ key: route, limits: [{ limit: 2, window: 1h }, { limit: 1, window: 1s }] }') })
    const status = async () => {
      const response = await request(`${gateway.url}/mem`)
      await response.body.dump()
      return response.statusCode
    }
    try {
      expect([await status(), await status()]).toEqual([200, 429])
      await waitFor(async () => (await status()) === 200, { timeoutMs: 3_000, what: 'the second window to open (with the hour not used up)' })
    } finally {
      await gateway.close()
      await upstream.close()
    }
  })
})

describe('without Redis', () => {
  it('holds the same limit in memory for the single process', async () => {
    const upstream = await startUpstream('mem')
    const gateway = await startGateway({ 'r.yaml': limited('mem', upstream.url, '{ key: route, limits: [{ limit: 2, window: 1h }] }') })
    const statuses: number[] = []
    for (let i = 0; i < 4; i++) {
      const response = await request(`${gateway.url}/mem`)
      await response.body.dump()
      statuses.push(response.statusCode)
    }
    expect(statuses).toEqual([200, 200, 429, 429])
    await gateway.close()
    await upstream.close()
  })
})

describe('when Redis dies mid-load (own Redis, two replicas)', () => {
  let redis: TestRedis
  let upstream: Upstream
  let replicas: GatewayProcess[]
  beforeAll(async () => {
    redis = await startRedis()
    upstream = await startUpstream('resilient')
    const dir = await makeRoutesDir({
      'r.yaml': limited('local', upstream.url, '{ key: route, limits: [{ limit: 10, window: 1h }] }') + limited('closed', upstream.url, '{ key: route, onRedisDown: closed, limits: [{ limit: 100, window: 1h }] }').replace('routes:\n', ''),
    })
    replicas = await Promise.all([0, 1].map(() => spawnGateway(dir, { REDIS_URL: redis.url })))
    for (const replica of replicas) await waitFor(async () => (await replicasSeen(replica.adminUrl)).replicas === 2, { timeoutMs: 10_000, what: 'both replicas to count each other' })
  })
  afterAll(async () => {
    await Promise.all((replicas ?? []).map((r) => r.stop('SIGKILL')))
    await redis?.stop()
    await upstream?.close()
  })

  it('never answers 500; each replica enforces its share; readiness says so; the shared limit resumes when Redis is back', async () => {
    await redis.stop()
    for (const replica of replicas) await waitFor(async () => (await replicasSeen(replica.adminUrl)).status === 'degraded', { what: 'state to turn degraded' })
    const perReplica: number[][] = []
    for (const replica of replicas) {
      const statuses: number[] = []
      for (let i = 0; i < 8; i++) {
        const response = await request(`${replica.url}/local`)
        await response.body.dump()
        statuses.push(response.statusCode)
      }
      perReplica.push(statuses)
    }
    // limit 10 over 2 live replicas: 5 each while Redis is away
    for (const statuses of perReplica) expect(statuses).toEqual([200, 200, 200, 200, 200, 429, 429, 429])
    const closed = await request(`${replicas[0]?.url}/closed`)
    expect(closed.statusCode).toBe(503)
    expect(((await closed.body.json()) as { code: string }).code).toBe('state_unavailable')

    await redis.start()
    for (const replica of replicas) await waitFor(async () => (await replicasSeen(replica.adminUrl)).status === 'ok', { timeoutMs: 10_000, what: 'state to be ok again' })
    const after: number[] = []
    for (let i = 0; i < 12; i++) {
      const response = await request(`${replicas[i % 2]?.url}/local`)
      await response.body.dump()
      after.push(response.statusCode)
    }
    expect(after.filter((s) => s === 200)).toHaveLength(10)
    expect(after.some((s) => s >= 500)).toBe(false)
  })
})

describe('junk at a rate limit\'s key in Redis', () => {
  const redisUrl = inject('redisUrl')
  const route = `junk-${process.pid}`
  let upstream: Upstream
  let gateway: TestGateway
  let redis: Redis
  beforeAll(async () => {
    upstream = await startUpstream('junk')
    redis = new Redis(redisUrl)
    gateway = await startGateway({ 'r.yaml': limited(route, upstream.url, '{ key: route, limits: [{ limit: 50, window: 1h }] }') }, {}, { REDIS_URL: redisUrl })
  })
  afterAll(async () => {
    await gateway?.close()
    await upstream?.close()
    redis?.disconnect()
  })

  const readiness = async () => (await (await request(`${gateway.adminUrl}/readyz`)).body.json()) as { status: string; components: { state: { status: string; detail?: string } } }
  const get = async () => {
    const response = await request(`${gateway.url}/${route}`)
    await response.body.dump()
    return response.statusCode
  }

  it.each([
    ['a string that is not a count', (key: string) => redis.set(key, 'not-a-number')],
    ['a value of another type', async (key: string) => void (await redis.del(key), await redis.hset(key, 'junk', '1'))],
  ])('replaces %s (no TTL, so it would stay), says so in readiness, and counts in Redis again', async (_case, plant) => {
    expect(await get()).toBe(200)
    const [key] = await redis.keys(`portico:rl:{${route}}:*`)
    expect(key).toBeDefined()
    await plant(key as string)
    expect(await get()).toBe(200) // on the replica's share meanwhile
    // The junk goes; the key's next request counts anew.
    await waitFor(async () => (await redis.exists(key as string)) === 0 || /^\d+$/.test((await redis.get(key as string).catch(() => null)) ?? ''), { timeoutMs: 5_000, what: 'the junk to be removed' })
    expect(await get()).toBe(200)
    expect(await redis.get(key as string)).toMatch(/^\d+$/)
    const ready = await readiness()
    expect(ready.components.state.status).toBe('degraded')
    expect(ready.components.state.detail).toContain(key)
    // counted in Redis again: each request moves the shared count
    const before = Number(await redis.get(key as string))
    for (let i = 0; i < 3; i++) expect(await get()).toBe(200)
    expect(Number(await redis.get(key as string))).toBe(before + 3)
    expect(await redis.pttl(key as string)).toBeGreaterThan(0)
  })
})
