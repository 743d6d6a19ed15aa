import { createPrivateKey, generateKeyPairSync } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CertificateError, certificateOf } from '../../src/tls/certificate.js'
import { TestCa, type IssuedPair } from '../support/certificates.js'

let ca: TestCa
let pair: IssuedPair
const files = { name: 'site', certFile: '/etc/portico/tls/site.crt', keyFile: '/etc/portico/tls/site.key' }

beforeAll(() => {
  ca = TestCa.create()
  pair = ca.issue(['Site.Test', '*.site.test'])
})
afterAll(() => ca.remove())

describe('certificateOf', () => {
  it('takes a pair whose key is its certificate\'s, with its DNS names in lower case and its expiry', () => {
    const served = certificateOf(files, pair.cert, pair.key, Date.now())
    expect(served.names).toEqual(['site.test', '*.site.test'])
    expect(served.notAfter.getTime()).toBeGreaterThan(Date.now())
  })

  it('says what is wrong with a pair in the files\' terms', () => {
    const refused = (cert: string, key: string, now = Date.now()) => {
      try {
        certificateOf(files, cert, key, now)
      } catch (error) {
        expect(error).toBeInstanceOf(CertificateError)
        return (error as Error).message
      }
      return 'taken'
    }
    expect(refused('not a certificate', pair.key)).toMatch(/^\/etc\/portico\/tls\/site\.crt: not a PEM certificate/)
    expect(refused(pair.cert, 'not a key')).toMatch(/^\/etc\/portico\/tls\/site\.key: not a PEM private key/)
    const encrypted = createPrivateKey(pair.key).export({ format: 'pem', type: 'pkcs8', cipher: 'aes-256-cbc', passphrase: 'secret' }) as string
    expect(refused(pair.cert, encrypted)).toBe('/etc/portico/tls/site.key: the key is encrypted; Portico takes unencrypted PEM keys')
    const otherKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'pem', type: 'pkcs8' }) as string
    expect(refused(pair.cert, otherKey)).toBe('/etc/portico/tls/site.key: this key is not the key of /etc/portico/tls/site.crt')
    expect(refused(pair.cert, pair.key, Date.now() + 10 * 86_400_000)).toMatch(/site\.crt: expired on 20\d\d-/)
    expect(refused(pair.cert, pair.key, Date.now() - 86_400_000)).toMatch(/site\.crt: not valid before 20\d\d-/)
  })
})
