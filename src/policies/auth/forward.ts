import { createHash } from 'node:crypto'
import type { IncomingHttpHeaders } from 'node:http'
import { LRUCache } from 'lru-cache'
import { Pool } from 'undici'
import type { LiveConsumers } from '../consumers.js'
import type { PolicyExchange } from '../policy.js'
import type { AuthConfig } from './schema.js'
import type { Verdict } from './verdict.js'

/** The most of a refusal's body passed back to the client: an authorization service says why in a few lines. */
const MAX_ANSWER_BYTES = 64 * 1024
const HEADER_SAFE = /^[\t\x20-\x7e]*$/
/** Allowing answers remembered per route with `cacheFor`: a sprayer of credentials the service allows fills at most this many. */
const MAX_REMEMBERED = 10_000
// Headers of one hop, or the message's own framing: neither goes to the service, nor back from it.
const NOT_PASSED = new Set(['host', 'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'content-length', 'te', 'trailer', 'upgrade', 'expect'])

type ForwardConfig = NonNullable<AuthConfig['forward']>

/**
 * Forward auth (Traefik's ForwardAuth, Envoy's ext_authz over HTTP): the request's method and headers, with
 * X-Forwarded-Method and X-Forwarded-Uri, go to the service, no body. A 2xx lets the request through with
 * `headersToUpstream` copied from the answer (its X-Consumer-Name, when it sends one, names the consumer); any other
 * answer goes back to the client as it came. Unreachable or late: `onError` decides.
 */
export class ForwardMethod {
  readonly #config: ForwardConfig
  readonly #path: string
  readonly #pool: Pool
  readonly #consumers: LiveConsumers
  readonly #allowed: LRUCache<string, Verdict> | undefined

  constructor(config: ForwardConfig, consumers: LiveConsumers) {
    this.#config = config
    const url = new URL(config.url)
    this.#path = `${url.pathname}${url.search}`
    this.#pool = new Pool(url.origin, { connections: 64, headersTimeout: config.timeoutMs, bodyTimeout: config.timeoutMs })
    this.#consumers = consumers
    this.#allowed = config.cacheForMs === undefined ? undefined : new LRUCache({ max: MAX_REMEMBERED, ttl: config.cacheForMs })
  }

  get identityHeaders(): Iterable<string> {
    return this.#config.headersToUpstream
  }

  check(ex: PolicyExchange, done: (verdict: Verdict) => void): void {
    const key = this.#allowed && credentialKey(ex)
    const remembered = key === undefined ? undefined : this.#allowed?.get(key)
    if (remembered) return done(remembered)
    this.#ask(ex).then(
      (verdict) => {
        if (key !== undefined && verdict.kind === 'admitted') this.#allowed?.set(key, verdict)
        done(verdict)
      },
      (error: unknown) => done(this.#failed(error)),
    )
  }

  stop(): void {
    void this.#pool.close()
  }

  async #ask(ex: PolicyExchange): Promise<Verdict> {
    const { request } = ex
    const headers: Record<string, string | string[]> = {}
    for (const [name, value] of Object.entries(ex.forwardedHeaders())) if (value !== undefined && !NOT_PASSED.has(name)) headers[name] = value
    headers['x-forwarded-method'] = request.method
    headers['x-forwarded-uri'] = request.url
    const answer = await this.#pool.request({ path: this.#path, method: request.method === 'HEAD' ? 'HEAD' : request.method, headers, signal: AbortSignal.timeout(this.#config.timeoutMs) })
    if (answer.statusCode >= 200 && answer.statusCode < 300) {
      answer.body.resume()
      const pass: [string, string][] = []
      for (const name of this.#config.headersToUpstream) {
        const value = first(answer.headers[name])
        if (value !== undefined && HEADER_SAFE.test(value)) pass.push([name, value])
      }
      const name = first(answer.headers['x-consumer-name'])
      const named = name !== undefined && HEADER_SAFE.test(name) && name !== '' ? name : undefined
      return { kind: 'admitted', method: 'forward', consumer: named === undefined ? undefined : this.#consumers.current.named(named), name: named, headers: pass }
    }
    const body = await bounded(answer.body)
    const back: Record<string, string | string[]> = {}
    // Only values node will write: a header it refuses would throw while the answer goes out, off any handler.
    for (const [name, value] of Object.entries(answer.headers as IncomingHttpHeaders)) {
      if (value === undefined || NOT_PASSED.has(name)) continue
      const values = (Array.isArray(value) ? value : [value]).filter((v) => HEADER_SAFE.test(v))
      if (values.length > 0) back[name] = values.length === 1 ? (values[0] as string) : values
    }
    return { kind: 'answered', method: 'forward', status: answer.statusCode, headers: back, body }
  }

  #failed(error: unknown): Verdict {
    const detail = `The authorization service ${this.#config.url} did not answer: ${(error as Error).name === 'TimeoutError' ? `no answer within ${this.#config.timeoutMs} ms` : (error as Error).message}`
    if (this.#config.onError === 'allow') return { kind: 'admitted', method: 'forward', outcome: 'allowed_on_error', consumer: undefined, name: undefined, headers: [] }
    return { kind: 'unavailable', method: 'forward', detail }
  }
}

const first = (value: string | string[] | undefined): string | undefined => (Array.isArray(value) ? value[0] : value)

/** The request's credentials as a cache key; undefined for a request that carries none. */
function credentialKey(ex: PolicyExchange): string | undefined {
  const { authorization, cookie } = ex.request.headers
  if (authorization === undefined && cookie === undefined) return undefined
  return createHash('sha256').update(`${authorization ?? ''}\u0000${cookie ?? ''}`).digest('base64')
}

async function bounded(body: AsyncIterable<Buffer> & { destroy(): void }): Promise<Buffer> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of body) {
    const room = MAX_ANSWER_BYTES - size
    chunks.push(chunk.length > room ? chunk.subarray(0, room) : chunk)
    size += Math.min(chunk.length, room)
    if (size >= MAX_ANSWER_BYTES) {
      body.destroy()
      break
    }
  }
  return Buffer.concat(chunks)
}
