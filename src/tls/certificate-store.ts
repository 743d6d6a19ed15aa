import { readdir, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import type { SecureContext } from 'node:tls'
import type { ComponentHealth } from '../kernel/health.js'
import type { Logger } from '../kernel/logger.js'
import { certificateOf, type CertificatePair, type ServedCertificate } from './certificate.js'

/** Where the certificates are: one pair (`--tls-cert`, `--tls-key`), or a directory of NAME.crt + NAME.key pairs. */
export type CertificateSource = { readonly certFile: string; readonly keyFile: string } | { readonly dir: string }

/**
 * How often the files are looked at. A stat per file, not a watch: Kubernetes renews a mounted Secret by swapping a
 * symlink, which inotify on the files never sees, and cert-manager or certbot may write the two files one at a time.
 */
export const CHECK_EVERY_MS = 500

/** In a directory, the pair that clients sending no server name (or one no certificate names) get. */
const DEFAULT_PAIR = 'default'

/**
 * The certificates the TLS listener serves, picked by SNI, kept up to date from their files. A pair that fails its
 * checks (unreadable, not PEM, a key that is not the certificate's, expired) is refused with a message and the pair's
 * last good version keeps serving; new handshakes get a renewed pair within CHECK_EVERY_MS, open connections keep
 * the one they started with.
 */
export class CertificateStore {
  readonly #source: CertificateSource
  readonly #logger: Logger
  readonly #onDefaultChange: (certificate: ServedCertificate) => void
  readonly #served = new Map<string, ServedCertificate>()
  readonly #refused = new Map<string, string>()
  /** What the files looked like when last read, per pair: a changed stat means read again. */
  readonly #stamps = new Map<string, string>()
  #byName = new Map<string, SecureContext>()
  #default: ServedCertificate | undefined
  #timer: NodeJS.Timeout | undefined
  #checking: Promise<void> | undefined

  constructor(source: CertificateSource, logger: Logger, onDefaultChange: (certificate: ServedCertificate) => void = () => undefined) {
    this.#source = source
    this.#logger = logger
    this.#onDefaultChange = onDefaultChange
  }

  /** Reads every pair; resolves once they are read (the caller decides whether what was refused stops it). */
  async load(): Promise<void> {
    await this.check()
  }

  /** Looks at the files every CHECK_EVERY_MS from now on. */
  watch(): void {
    this.#timer ??= setInterval(() => void this.check(), CHECK_EVERY_MS).unref()
  }

  stop(): void {
    clearInterval(this.#timer)
    this.#timer = undefined
  }

  /** The context for a handshake that names `serverName`: an exact name, else a wildcard one label up, else the default. */
  contextFor(serverName: string): SecureContext | undefined {
    const name = serverName.toLowerCase()
    const exact = this.#byName.get(name)
    if (exact) return exact
    const dot = name.indexOf('.')
    return (dot > 0 ? this.#byName.get(`*${name.slice(dot)}`) : undefined) ?? this.#default?.context
  }

  get defaultCertificate(): ServedCertificate | undefined {
    return this.#default
  }

  served(): readonly ServedCertificate[] {
    return [...this.#served.values()]
  }

  /** Why each refused pair was refused, by pair name. */
  refused(): ReadonlyMap<string, string> {
    return this.#refused
  }

  /** ok; degraded while a pair is refused (its last good version, if any, serving); down with nothing to serve. */
  health(now = Date.now()): ComponentHealth {
    const certificates = this.served().map((c) => ({ name: c.name, names: c.names, notAfter: c.notAfter.toISOString(), expiresInSeconds: Math.round((c.notAfter.getTime() - now) / 1000) }))
    if (this.#default === undefined) return { status: 'down', detail: 'no certificate to serve', refused: Object.fromEntries(this.#refused) }
    if (this.#refused.size > 0) return { status: 'degraded', detail: `refused (the last good version of each keeps serving): ${[...this.#refused.values()].join('; ')}`, certificates, refused: Object.fromEntries(this.#refused) }
    const expired = certificates.filter((c) => c.expiresInSeconds <= 0)
    if (expired.length > 0) return { status: 'degraded', detail: `expired and still served: ${expired.map((c) => c.name).join(', ')}`, certificates }
    return { status: 'ok', certificates }
  }

  /** One look at the files; overlapping calls share it. */
  check(): Promise<void> {
    return (this.#checking ??= this.#check().finally(() => (this.#checking = undefined)))
  }

  async #check(): Promise<void> {
    const pairs = await this.#pairs()
    let changed = false
    for (const pair of pairs) if (await this.#checkPair(pair)) changed = true
    const present = new Set(pairs.map((p) => p.name))
    for (const name of [...this.#stamps.keys()]) {
      if (present.has(name)) continue
      this.#stamps.delete(name)
      this.#refused.delete(name)
      if (this.#served.delete(name)) {
        this.#logger.info({ certificate: name }, 'TLS certificate removed: its files are gone')
        changed = true
      }
    }
    if (changed) this.#index()
  }

  /** Reads a pair again if its files changed; true when what is served changed. */
  async #checkPair(pair: CertificatePair): Promise<boolean> {
    const stamp = await stampOf(pair)
    if (stamp === this.#stamps.get(pair.name)) return false
    this.#stamps.set(pair.name, stamp)
    try {
      const [cert, key] = await Promise.all([readFile(pair.certFile, 'utf8'), readFile(pair.keyFile, 'utf8')])
      const certificate = certificateOf(pair, cert, key, Date.now())
      const previous = this.#served.get(pair.name)
      this.#refused.delete(pair.name)
      if (previous?.fingerprint === certificate.fingerprint && previous.key === certificate.key) return false
      this.#served.set(pair.name, certificate)
      this.#logger.info({ certificate: pair.name, names: certificate.names, notAfter: certificate.notAfter.toISOString() }, previous ? 'TLS certificate renewed: new handshakes get it' : 'TLS certificate loaded')
      return true
    } catch (error) {
      const message = (error as NodeJS.ErrnoException).code === 'ENOENT' || (error as NodeJS.ErrnoException).code === 'EACCES' ? `${(error as NodeJS.ErrnoException).path ?? pair.certFile}: cannot be read (${(error as NodeJS.ErrnoException).code})` : (error as Error).message
      this.#refused.set(pair.name, message)
      this.#logger.error({ certificate: pair.name }, `TLS certificate refused, ${this.#served.has(pair.name) ? 'the last good one keeps serving' : 'nothing served for it'}: ${message}`)
      return false
    }
  }

  async #pairs(): Promise<CertificatePair[]> {
    const source = this.#source
    if (!('dir' in source)) return [{ name: DEFAULT_PAIR, certFile: source.certFile, keyFile: source.keyFile }]
    let files: string[]
    try {
      files = await readdir(source.dir)
    } catch (error) {
      // An unreadable directory keeps what it served: its pairs are not reported gone.
      this.#logger.error({ dir: source.dir, err: error }, 'TLS directory cannot be read; the certificates read before keep serving')
      return [...this.#stamps.keys()].map((name) => ({ name, certFile: join(source.dir, `${name}.crt`), keyFile: join(source.dir, `${name}.key`) }))
    }
    return files
      .filter((f) => f.endsWith('.crt') && !f.startsWith('.'))
      .map((f) => f.slice(0, -4))
      .map((name) => ({ name, certFile: join(source.dir, `${name}.crt`), keyFile: join(source.dir, `${name}.key`) }))
  }

  #index(): void {
    const inNameOrder = [...this.#served.values()].sort((a, b) => (a.name < b.name ? -1 : 1))
    const byName = new Map<string, SecureContext>()
    // A name two pairs claim goes to the first in name order.
    for (const certificate of inNameOrder) for (const name of certificate.names) if (!byName.has(name)) byName.set(name, certificate.context)
    this.#byName = byName
    const fallback = this.#served.get(DEFAULT_PAIR) ?? inNameOrder[0]
    if (fallback !== undefined && fallback !== this.#default) {
      this.#default = fallback
      this.#onDefaultChange(fallback)
    } else if (fallback === undefined) {
      this.#default = undefined
    }
  }
}

async function stampOf(pair: CertificatePair): Promise<string> {
  const one = (file: string) =>
    stat(file).then(
      (s) => `${s.ino}:${s.size}:${s.mtimeMs}`,
      (error: NodeJS.ErrnoException) => `missing:${error.code ?? ''}`,
    )
  return `${await one(pair.certFile)}|${await one(pair.keyFile)}`
}
