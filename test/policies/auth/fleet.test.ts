import { createHash } from 'node:crypto'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startGateway, type TestGateway } from '../../support/gateway.js'
import { timeUntil } from '../../support/poll.js'
import { startRedis, type TestRedis } from '../../support/redis.js'
import { routeFile } from '../../support/routes.js'
import { startUpstream, type Upstream } from '../../support/upstream.js'
import { ISSUER, startIdentityProvider, type IdentityProvider } from './support/identity-provider.js'

const sha = (key: string) => createHash('sha256').update(key).digest('hex')
const KEY = 'pk_fleet-consumer-key'

const status = (url: string, headers: Record<string, string>) => request(url, { headers }).then(async (r) => (await r.body.dump(), r.statusCode))

describe('auth across two replicas on one Redis', () => {
  let redis: TestRedis
  let idp: IdentityProvider
  let upstream: Upstream
  let a: TestGateway
  let b: TestGateway
  beforeAll(async () => {
    redis = await startRedis()
    idp = await startIdentityProvider()
    await idp.addKey('k1')
    upstream = await startUpstream('orders')
    const files = {
      'consumers.yaml': `consumers:\n  - name: fleet\n    apiKeys: [sha256:${sha(KEY)}]\n    rateLimit: { limit: 6, window: 1h }\n`,
      'keys.yaml': routeFile('keys', '/keys', upstream.url, 'auth: { apiKey: {} }', 'rateLimit: { key: consumer, limit: 1, window: 1h }'),
      'tokens.yaml': routeFile('tokens', '/tokens', upstream.url, `auth: { jwt: { issuer: "${ISSUER}", audiences: [orders-api], jwksUri: "${idp.jwksUri}", algorithms: [RS256] } }`),
    }
    const env = { REDIS_URL: redis.url }
    ;[a, b] = await Promise.all([startGateway(files, {}, env), startGateway(files, {}, env)])
  })
  afterAll(async () => {
    await Promise.all([a?.close(), b?.close()])
    await upstream?.close()
    await idp?.stop()
    await redis?.stop()
  })

  it('fetches the JWKS once for the fleet: the other replica reads it from Redis', async () => {
    const token = await idp.sign('k1', { sub: 'user-1' })
    expect(await status(`${a.url}/tokens/1`, { authorization: `Bearer ${token}` })).toBe(200)
    expect(await status(`${b.url}/tokens/1`, { authorization: `Bearer ${token}` })).toBe(200)
    expect(idp.fetches()).toBe(1)
  })

  it('fetches the JWKS itself when Redis stops answering, and keeps verifying', async () => {
    await idp.addKey('k2')
    const token = await idp.sign('k2', { sub: 'user-2' })
    const before = idp.fetches()
    redis.pause()
    try {
      expect(await status(`${a.url}/tokens/1`, { authorization: `Bearer ${token}` })).toBe(200)
    } finally {
      redis.resume()
    }
    expect(idp.fetches()).toBe(before + 1)
  })

  it('holds a consumer\'s own limit exactly across both replicas', async () => {
    const statuses: number[] = []
    for (let i = 0; i < 10; i++) statuses.push(await status(`${(i % 2 === 0 ? a : b).url}/keys/x`, { 'x-api-key': KEY }))
    expect(statuses.filter((s) => s === 200)).toHaveLength(6)
    expect(statuses.slice(6)).toEqual([429, 429, 429, 429])
  })

  it('refuses on B, within a second, a key revoked through A; the revocation outlives both replicas', async () => {
    // The key is over its limit by now (429): a revoked key is refused before any limit counts it (401).
    const answer = await request(`${a.adminUrl}/admin/consumers/fleet/keys/sha256:${sha(KEY)}`, { method: 'DELETE' })
    expect(answer.statusCode).toBe(200)
    await answer.body.dump()
    const took = await timeUntil(async () => (await status(`${b.url}/keys/x`, { 'x-api-key': KEY })) === 401, { timeoutMs: 3_000, what: 'B to refuse the revoked key' })
    expect(took).toBeLessThan(1_000)

    const restarted = await startGateway({ 'consumers.yaml': `consumers:\n  - name: fleet\n    apiKeys: [sha256:${sha(KEY)}]\n`, 'keys.yaml': routeFile('keys', '/keys', upstream.url, 'auth: { apiKey: {} }') }, {}, { REDIS_URL: redis.url })
    try {
      await timeUntil(async () => (await status(`${restarted.url}/keys/x`, { 'x-api-key': KEY })) === 401, { timeoutMs: 3_000, what: 'a new replica to refuse the revoked key' })
    } finally {
      await restarted.close()
    }
  })
})
