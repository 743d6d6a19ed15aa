import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose'

export const ISSUER = 'https://id.example.test/'

interface SigningKey {
  readonly kid: string
  readonly alg: string
  readonly privateKey: CryptoKey
  readonly jwk: JWK
}

/** An identity provider of the test's own: keys made here, a JWKS served over a real socket, requests to it counted. */
export interface IdentityProvider {
  readonly jwksUri: string
  /** JWKS requests served. */
  fetches(): number
  /** A new key; `publish: false` keeps it out of the JWKS (a token signed with a key the provider never listed). */
  addKey(kid: string, options?: { alg?: 'RS256' | 'ES256'; publish?: boolean }): Promise<void>
  /** Takes a key out of the JWKS (rotation). */
  dropKey(kid: string): void
  sign(kid: string, claims?: JWTPayload, options?: { expiresIn?: string | number; issuer?: string; audience?: string; notBefore?: string | number; issuedAt?: number }): Promise<string>
  /** Stops answering (the provider is down); `start` brings it back on the same port. */
  stop(): Promise<void>
  start(): Promise<void>
}

export async function startIdentityProvider(): Promise<IdentityProvider> {
  const keys = new Map<string, SigningKey>()
  const published = new Set<string>()
  let served = 0
  const handler = (_req: unknown, res: import('node:http').ServerResponse) => {
    served++
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ keys: [...published].map((kid) => keys.get(kid)?.jwk) }))
  }
  let server: Server = createServer(handler)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  return {
    jwksUri: `http://127.0.0.1:${port}/.well-known/jwks.json`,
    fetches: () => served,
    async addKey(kid, { alg = 'RS256', publish = true } = {}) {
      const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true })
      keys.set(kid, { kid, alg, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' } })
      if (publish) published.add(kid)
    },
    dropKey: (kid) => void published.delete(kid),
    async sign(kid, claims = {}, { expiresIn = '5m', issuer = ISSUER, audience = 'orders-api', notBefore, issuedAt } = {}) {
      const key = keys.get(kid)
      if (!key) throw new Error(`no key ${kid}`)
      let jwt = new SignJWT(claims).setProtectedHeader({ alg: key.alg, kid }).setIssuer(issuer).setAudience(audience).setExpirationTime(expiresIn)
      jwt = issuedAt === undefined ? jwt.setIssuedAt() : jwt.setIssuedAt(issuedAt)
      if (notBefore !== undefined) jwt = jwt.setNotBefore(notBefore)
      return jwt.sign(key.privateKey)
    },
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
    async start() {
      server = createServer(handler)
      await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
    },
  }
}
