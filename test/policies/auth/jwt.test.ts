import { createHmac, generateKeyPairSync } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startGateway, type TestGateway } from '../../support/gateway.js'
import { waitFor } from '../../support/poll.js'
import { routeFile } from '../../support/routes.js'
import { startUpstream, type Upstream } from '../../support/upstream.js'
import { ISSUER, startIdentityProvider, type IdentityProvider } from './support/identity-provider.js'

const jwtRoute = (jwksUri: string, extra = '') =>
  `auth: { jwt: { issuer: "${ISSUER}", audiences: [orders-api], jwksUri: "${jwksUri}", algorithms: [RS256, ES256], clockSkew: 5s, claimsToHeaders: { sub: X-User-Id, scope: X-User-Scope } }${extra} }`

const call = async (url: string, token?: string, headers: Record<string, string> = {}) => {
  const response = await request(url, { headers: { ...headers, ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) } })
  const text = await response.body.text()
  return { status: response.statusCode, challenge: response.headers['www-authenticate'], body: text.startsWith('{') ? (JSON.parse(text) as Record<string, unknown>) : {} }
}

const b64 = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url')
const now = () => Math.floor(Date.now() / 1000)

describe('auth.jwt against a real JWKS server', () => {
  let idp: IdentityProvider
  let upstream: Upstream
  let gateway: TestGateway
  beforeAll(async () => {
    idp = await startIdentityProvider()
    await idp.addKey('k1')
    await idp.addKey('e1', { alg: 'ES256' })
    upstream = await startUpstream('orders')
    gateway = await startGateway({
      'consumers.yaml': 'consumers:\n  - name: acme\n    groups: [partners]\n',
      'orders.yaml': routeFile('orders', '/orders', upstream.url, jwtRoute(idp.jwksUri)),
      'partners.yaml': routeFile('partners', '/partners', upstream.url, jwtRoute(idp.jwksUri, ', groups: [partners]')),
    })
  })
  afterAll(async () => {
    await gateway?.close()
    await upstream?.close()
    await idp?.stop()
  })

  let verifiedWithK1 = ''
  it('lets a valid token through with its claims as headers; the client\'s own copies never pass', async () => {
    const token = (verifiedWithK1 = await idp.sign('k1', { sub: 'user-7', scope: ['read', 'write'] }))
    const ok = await call(`${gateway.url}/orders/1`, token, { 'x-user-id': 'admin', 'x-consumer-name': 'acme' })
    expect(ok.status).toBe(200)
    const seen = upstream.requests.at(-1)?.headers ?? {}
    expect([seen['x-user-id'], seen['x-user-scope'], seen['x-consumer-name']]).toEqual(['user-7', 'read write', undefined])
    expect((await call(`${gateway.url}/orders/1`, await idp.sign('e1', { sub: 'user-8' }))).status).toBe(200)
  })

  it('refuses what must be refused, each with RFC 6750\'s invalid_token, and no upstream sees any of them', async () => {
    const before = upstream.requests.length
    const [header, payload] = (await idp.sign('k1', { sub: 'x' })).split('.') as [string, string, string]
    const rsaPublicPem = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }) as string
    const hsHeader = b64({ alg: 'HS256', kid: 'k1' })
    const hsBody = b64({ iss: ISSUER, aud: 'orders-api', sub: 'x', exp: now() + 300 })
    const cases: [string, string, string][] = [
      ['expired', await idp.sign('k1', { sub: 'x' }, { expiresIn: now() - 60 }), 'expired'],
      ['not yet valid', await idp.sign('k1', { sub: 'x' }, { notBefore: now() + 600 }), 'not valid yet'],
      ['issued in the future', await idp.sign('k1', { sub: 'x' }, { issuedAt: now() + 600 }), 'issued in the future'],
      ['wrong issuer', await idp.sign('k1', { sub: 'x' }, { issuer: 'https://evil.example/' }), '"iss"'],
      ['wrong audience', await idp.sign('k1', { sub: 'x' }, { audience: 'billing-api' }), '"aud"'],
      ['alg none', `${b64({ alg: 'none', kid: 'k1' })}.${payload}.`, 'algorithm'],
      ['HS256 signed with an RSA public key', `${hsHeader}.${hsBody}.${createHmac('sha256', rsaPublicPem).update(`${hsHeader}.${hsBody}`).digest('base64url')}`, 'algorithm'],
      ['a tampered payload', `${header}.${b64({ iss: ISSUER, aud: 'orders-api', sub: 'root', exp: now() + 300 })}.${(await idp.sign('k1')).split('.')[2]}`, 'signature'],
      ['junk', 'a.b.c', 'cannot be read'],
    ]
    for (const [what, token, says] of cases) {
      const refused = await call(`${gateway.url}/orders/1`, token)
      expect([what, refused.status, refused.body.code]).toEqual([what, 401, 'unauthorized'])
      expect(refused.challenge, what).toMatch(/^Bearer realm="portico", error="invalid_token", error_description="/)
      expect(String(refused.body.detail), what).toContain(says)
    }
    const none = await call(`${gateway.url}/orders/1`)
    expect([none.status, none.challenge]).toEqual([401, 'Bearer realm="portico"'])
    expect(upstream.requests.length).toBe(before)
  })

  it('makes a token\'s subject its consumer: a known one gets its groups, an unknown one none', async () => {
    expect((await call(`${gateway.url}/partners/1`, await idp.sign('k1', { sub: 'acme' }))).status).toBe(200)
    expect(upstream.requests.at(-1)?.headers['x-consumer-name']).toBe('acme')
    const stranger = await call(`${gateway.url}/partners/1`, await idp.sign('k1', { sub: 'stranger' }))
    expect([stranger.status, stranger.body.code]).toEqual([403, 'forbidden'])
  })

  it('picks up a rotated key on its first token, refuses a dropped one, and fetches once for a thousand unknown kids', async () => {
    await idp.addKey('k2')
    idp.dropKey('k1')
    const before = idp.fetches()
    expect((await call(`${gateway.url}/orders/1`, verifiedWithK1)).status).toBe(200) // remembered, its key still listed here
    const rotated = await idp.sign('k2', { sub: 'user-9' })
    expect((await call(`${gateway.url}/orders/1`, rotated)).status).toBe(200)
    expect(idp.fetches()).toBe(before + 1)
    // The fetch that brought k2 dropped k1: a token verified with it before is refused now, remembered or not.
    const dropped = await call(`${gateway.url}/orders/1`, verifiedWithK1)
    expect([dropped.status, dropped.body.detail]).toEqual([401, 'The token\'s key is not one of the identity provider\'s'])

    // A key the provider never lists: a thousand tokens naming unknown kids, and not one more fetch (30 s apart at most).
    await idp.addKey('rogue', { publish: false })
    const sprayed = await Promise.all(Array.from({ length: 1000 }, (_, i) => idp.sign('rogue', { sub: `s${i}` }).then((t) => call(`${gateway.url}/orders/1`, t))))
    expect(new Set(sprayed.map((r) => r.status))).toEqual(new Set([401]))
    expect(idp.fetches()).toBe(before + 1)
  })
})

describe('auth.jwt keys: the last good JWKS while the provider is down, a PEM file, an HS secret', () => {
  let idp: IdentityProvider
  let upstream: Upstream
  let gateway: TestGateway
  beforeAll(async () => {
    idp = await startIdentityProvider()
    await idp.addKey('k1')
    upstream = await startUpstream('orders')
    const { publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
    const pemFile = join(tmpdir(), `portico-jwt-${process.pid}.pem`)
    await writeFile(pemFile, publicKey.export({ type: 'spki', format: 'pem' }) as string)
    process.env.PORTICO_TEST_HS_SECRET = 'a-secret-of-at-least-thirty-two-bytes!'
    gateway = await startGateway({
      'orders.yaml': routeFile('orders', '/orders', upstream.url, jwtRoute(idp.jwksUri)),
      'hs.yaml': routeFile('hs', '/hs', upstream.url, `auth: { jwt: { issuer: "${ISSUER}", secretEnv: PORTICO_TEST_HS_SECRET, algorithms: [HS256] } }`),
      'pem.yaml': routeFile('pem', '/pem', upstream.url, `auth: { jwt: { issuer: "${ISSUER}", publicKeyFile: "${pemFile}", algorithms: [RS256] } }`),
    })
  })
  afterAll(async () => {
    delete process.env.PORTICO_TEST_HS_SECRET
    await gateway?.close()
    await upstream?.close()
    await idp?.stop()
  })

  it('keeps serving valid tokens from the last good JWKS while the provider is down, and says so', async () => {
    const token = await idp.sign('k1', { sub: 'user-1' })
    expect((await call(`${gateway.url}/orders/1`, token)).status).toBe(200)
    await idp.stop()
    await idp.addKey('k9')
    // An unknown kid asks for a fresh copy: the provider is down, so the set goes stale and stays in use.
    expect((await call(`${gateway.url}/orders/1`, await idp.sign('k9', { sub: 'user-2' }))).status).toBe(401)
    const ready = await waitFor(
      async () => {
        const body = (await request(`${gateway.adminUrl}/readyz`).then((r) => r.body.json())) as { status: string; components: Record<string, { status: string; detail?: string }> }
        return body.components.auth?.status === 'degraded' ? body : undefined
      },
      { what: 'readiness to say the JWKS is stale' },
    )
    expect(ready.components.auth?.detail).toContain(idp.jwksUri)
    const metrics = await request(`${gateway.adminUrl}/metrics`).then((r) => r.body.text())
    expect(metrics).toMatch(/portico_auth_jwks_stale\{route="orders"\} 1/)
    expect((await call(`${gateway.url}/orders/1`, await idp.sign('k1', { sub: 'user-3' }))).status).toBe(200)
    const after = await request(`${gateway.adminUrl}/metrics`).then((r) => r.body.text())
    expect(after).toMatch(/portico_auth_decisions_total\{route="orders",method="jwt",outcome="allowed"\} 2/)
    expect(after).toMatch(/portico_auth_decisions_total\{route="orders",method="jwt",outcome="unknown_key"\} 1/)
    await idp.start()
  })

  it('verifies HS256 with a secret from the environment and RS256 with a PEM file, refusing the other\'s tokens', async () => {
    const hsHeader = b64({ alg: 'HS256' })
    const hsBody = b64({ iss: ISSUER, sub: 'svc', exp: now() + 60 })
    const hsToken = `${hsHeader}.${hsBody}.${createHmac('sha256', 'a-secret-of-at-least-thirty-two-bytes!').update(`${hsHeader}.${hsBody}`).digest('base64url')}`
    expect((await call(`${gateway.url}/hs/1`, hsToken)).status).toBe(200)
    expect((await call(`${gateway.url}/pem/1`, hsToken)).status).toBe(401)
    expect((await call(`${gateway.url}/hs/1`, await idp.sign('k1', { sub: 'svc' }))).status).toBe(401)
  })
})
