import { X509Certificate, constants, createPrivateKey, type KeyObject } from 'node:crypto'
import { createSecureContext, type SecureContext, type SecureContextOptions } from 'node:tls'

/**
 * What a security review asks of a TLS endpoint (Mozilla's "intermediate"): TLS 1.2 and 1.3 only, the server's cipher
 * order (node's default list: ECDHE and AEAD ciphers first), and no renegotiation, which TLS 1.3 dropped and TLS 1.2
 * clients could use to make the server do handshakes over and over.
 */
export const TLS_DEFAULTS: SecureContextOptions = {
  minVersion: 'TLSv1.2',
  honorCipherOrder: true,
  secureOptions: constants.SSL_OP_NO_RENEGOTIATION,
}

/** A certificate file and its key file: one entry of `--tls-dir` (NAME.crt + NAME.key) or `--tls-cert`/`--tls-key`. */
export interface CertificatePair {
  readonly name: string
  readonly certFile: string
  readonly keyFile: string
}

/** A pair that passed every check, ready for handshakes. */
export interface ServedCertificate extends CertificatePair {
  /** The host names it serves, lower case: its DNS subject alternative names (its CN when it has none); `*.x` covers one label. */
  readonly names: readonly string[]
  readonly notAfter: Date
  readonly fingerprint: string
  readonly context: SecureContext
  /** The PEM texts, for the server's default context (clients that send no server name). */
  readonly cert: string
  readonly key: string
}

export class CertificateError extends Error {
  override name = 'CertificateError'
}

/**
 * Checks a pair as the TLS server would use it and says what is wrong in the operator's terms: a certificate that
 * does not parse, a key that does not parse or is not the certificate's, a certificate not valid now.
 */
export function certificateOf(pair: CertificatePair, certPem: string, keyPem: string, now: number): ServedCertificate {
  let certificate: X509Certificate
  try {
    certificate = new X509Certificate(certPem)
  } catch (error) {
    throw new CertificateError(`${pair.certFile}: not a PEM certificate (${(error as Error).message})`)
  }
  // PKCS#8 (ENCRYPTED PRIVATE KEY) or OpenSSL's traditional form (Proc-Type: 4,ENCRYPTED).
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED/.test(keyPem)) throw new CertificateError(`${pair.keyFile}: the key is encrypted; Portico takes unencrypted PEM keys`)
  let key: KeyObject
  try {
    key = createPrivateKey(keyPem)
  } catch (error) {
    throw new CertificateError(`${pair.keyFile}: not a PEM private key (${(error as Error).message})`)
  }
  if (!certificate.checkPrivateKey(key)) throw new CertificateError(`${pair.keyFile}: this key is not the key of ${pair.certFile}`)
  const notBefore = new Date(certificate.validFrom)
  const notAfter = new Date(certificate.validTo)
  if (notAfter.getTime() <= now) throw new CertificateError(`${pair.certFile}: expired on ${notAfter.toISOString()}`)
  if (notBefore.getTime() > now) throw new CertificateError(`${pair.certFile}: not valid before ${notBefore.toISOString()}`)
  const names = hostNamesOf(certificate)
  if (names.length === 0) throw new CertificateError(`${pair.certFile}: names no host (no DNS subject alternative name, no common name)`)
  let context: SecureContext
  try {
    context = createSecureContext({ ...TLS_DEFAULTS, cert: certPem, key: keyPem })
  } catch (error) {
    throw new CertificateError(`${pair.certFile}: refused by OpenSSL (${(error as Error).message})`)
  }
  return { ...pair, names, notAfter, fingerprint: certificate.fingerprint256, context, cert: certPem, key: keyPem }
}

function hostNamesOf(certificate: X509Certificate): string[] {
  const dns = (certificate.subjectAltName ?? '')
    .split(', ')
    .filter((entry) => entry.startsWith('DNS:'))
    .map((entry) => entry.slice(4).toLowerCase())
  if (dns.length > 0) return dns
  const commonName = /(?:^|\n)CN=([^\n]+)/.exec(certificate.subject)?.[1]
  return commonName === undefined ? [] : [commonName.toLowerCase()]
}
