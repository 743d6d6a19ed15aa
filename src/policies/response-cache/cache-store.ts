import CachePolicy from 'http-cache-semantics'
import { Cluster, type Redis } from 'ioredis'
import { createHash } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import { parseJsonObject } from '../../kernel/json.js'
import type { SharedState } from '../../state/shared-state.js'

/** A response kept whole, with what decides its freshness. */
export interface StoredResponse {
  readonly kind: 'response'
  readonly policy: CachePolicy
  readonly status: number
  /** As the client gets them, less what each answer sets itself (Age, Content-Length, the gateway's own). */
  readonly headers: Readonly<Record<string, string | string[]>>
  readonly body: Buffer
}

/** At the request's key when the upstream's Vary splits it further: the entries live under the variants' keys. */
export interface VariantsMarker {
  readonly kind: 'variants'
  readonly vary: readonly string[]
}

/** At a key whose last response could not be stored: requests for it go upstream at once, none waits for another. */
export interface PassMarker {
  readonly kind: 'pass'
}

export type CacheEntry = StoredResponse | VariantsMarker | PassMarker

/** Where a key's entries are: the path part lets a purge find every entry of one path. */
export interface CacheKey {
  /** The upstream path (no query). */
  readonly path: string
  /** Method, query, the values of the headers the key varies on. */
  readonly rest: string
}

export interface CacheStore {
  get(key: CacheKey): CacheEntry | undefined | Promise<CacheEntry | undefined>
  set(key: CacheKey, entry: CacheEntry, ttlMs: number): void
  /** Drops every entry of the route, or of one upstream path; resolves to how many went (as far as it can tell). */
  purge(path: string | undefined): Promise<number>
  /** Asks to be the one replica that fetches `key`: false when another holds the fetch now. */
  lead(key: CacheKey, forMs: number): Promise<boolean>
  /** The fetch of `key` ended (stored or not). */
  unlead(key: CacheKey): void
  /** Bytes and entries held in this process. */
  readonly held: { readonly bytes: number; readonly entries: number }
}

export function entrySize(entry: CacheEntry): number {
  if (entry.kind !== 'response') return 64
  let size = entry.body.length + 256
  for (const [name, value] of Object.entries(entry.headers)) size += name.length + (Array.isArray(value) ? value.join('').length : value.length)
  return size
}

/** Per process, bounded by bytes: the least recently used entries go first. */
export class MemoryStore implements CacheStore {
  readonly #entries: LRUCache<string, CacheEntry>

  constructor(maxBytes: number, onEvict: () => void) {
    this.#entries = new LRUCache<string, CacheEntry>({
      maxSize: maxBytes,
      sizeCalculation: entrySize,
      dispose: (_entry, _key, reason) => {
        if (reason === 'evict') onEvict()
      },
    })
  }

  get held() {
    return { bytes: this.#entries.calculatedSize, entries: this.#entries.size }
  }

  get(key: CacheKey): CacheEntry | undefined {
    return this.#entries.get(keyText(key))
  }

  set(key: CacheKey, entry: CacheEntry, ttlMs: number): void {
    this.#entries.set(keyText(key), entry, { ttl: ttlMs })
  }

  purge(path: string | undefined): Promise<number> {
    if (path === undefined) {
      const count = this.#entries.size
      this.#entries.clear()
      return Promise.resolve(count)
    }
    const prefix = `${path}\n`
    let count = 0
    for (const key of [...this.#entries.keys()]) if (key.startsWith(prefix) && this.#entries.delete(key)) count++
    return Promise.resolve(count)
  }

  // One process: the per-replica coalescing already makes one fetch per key.
  lead(): Promise<boolean> {
    return Promise.resolve(true)
  }

  unlead(): void {}
}

/** A key as one string: the memory store's, and the one fetch of it per replica. */
export const keyText = (key: CacheKey) => `${key.path}\n${key.rest}`

/**
 * One cache for the fleet, in Redis: entries are binary strings with a TTL, a short lock per key makes one replica fetch
 * a missing entry while the others wait for it. While Redis is away, each replica uses its own memory store (and a
 * Redis error on a read is a miss, never a failed request).
 */
export class RedisStore implements CacheStore {
  readonly #state: SharedState
  readonly #prefix: string
  readonly #fallback: MemoryStore
  readonly #onJunk: (key: string) => void

  constructor(state: SharedState, route: string, fallback: MemoryStore, onJunk: (key: string) => void) {
    this.#state = state
    this.#prefix = `portico:cache:{${route}}:`
    this.#fallback = fallback
    this.#onJunk = onJunk
  }

  get held() {
    return this.#fallback.held
  }

  get(key: CacheKey): CacheEntry | undefined | Promise<CacheEntry | undefined> {
    if (!this.#state.isUp()) return this.#fallback.get(key)
    const redisKey = this.#redisKey(key)
    return this.#state.redis.getBuffer(redisKey).then(
      (value) => {
        if (value === null) return undefined
        const entry = decodeEntry(value)
        if (!entry) this.#onJunk(redisKey)
        return entry
      },
      () => this.#fallback.get(key),
    )
  }

  set(key: CacheKey, entry: CacheEntry, ttlMs: number): void {
    if (!this.#state.isUp()) return this.#fallback.set(key, entry, ttlMs)
    this.#state.redis.set(this.#redisKey(key), encodeEntry(entry), 'PX', Math.max(1, Math.round(ttlMs))).catch(() => this.#fallback.set(key, entry, ttlMs))
  }

  async purge(path: string | undefined): Promise<number> {
    const local = await this.#fallback.purge(path)
    const pattern = path === undefined ? `${this.#prefix}*` : `${this.#prefix}${digest(path)}:*`
    return local + (await scanDelete(this.#state.redis, pattern))
  }

  async lead(key: CacheKey, forMs: number): Promise<boolean> {
    if (!this.#state.isUp()) return true
    try {
      return (await this.#state.redis.set(this.#lockKey(key), this.#state.replicaId, 'PX', Math.max(1, Math.round(forMs)), 'NX')) === 'OK'
    } catch {
      return true
    }
  }

  unlead(key: CacheKey): void {
    if (this.#state.isUp()) this.#state.redis.del(this.#lockKey(key)).catch(() => undefined)
  }

  #redisKey(key: CacheKey): string {
    return `${this.#prefix}${digest(key.path)}:${digest(key.rest)}`
  }

  #lockKey(key: CacheKey): string {
    return `${this.#prefix}lock:${digest(key.path)}:${digest(key.rest)}`
  }
}

const digest = (text: string) => createHash('sha1').update(text).digest('base64url')

/** Deletes the keys matching `pattern` on every master (a Cluster's SCAN sees one node at a time). */
async function scanDelete(redis: Redis, pattern: string): Promise<number> {
  const nodes = redis instanceof Cluster ? (redis as unknown as Cluster).nodes('master') : [redis]
  let deleted = 0
  for (const node of nodes) {
    let cursor = '0'
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 500)
      cursor = next
      // One key per DEL: keys of one route share a slot, but a Cluster refuses a multi-key command across nodes.
      for (const key of keys) deleted += await node.del(key)
    } while (cursor !== '0')
  }
  return deleted
}

/**
 * An entry as Redis holds it: a 4-byte length, that many bytes of JSON (kind, policy, status, headers, vary), then the
 * body as it is. What other software or an older version left there decodes to undefined: a miss, never a crash.
 */
export function encodeEntry(entry: CacheEntry): Buffer {
  const meta = entry.kind === 'response' ? { v: 1, kind: entry.kind, policy: entry.policy.toObject(), status: entry.status, headers: entry.headers } : { v: 1, ...entry }
  const json = Buffer.from(JSON.stringify(meta))
  const length = Buffer.allocUnsafe(4)
  length.writeUInt32BE(json.length)
  return Buffer.concat([length, json, entry.kind === 'response' ? entry.body : Buffer.alloc(0)])
}

export function decodeEntry(value: Buffer): CacheEntry | undefined {
  if (value.length < 4) return undefined
  const length = value.readUInt32BE(0)
  if (length > value.length - 4) return undefined
  const meta = parseJsonObject(value.subarray(4, 4 + length).toString())
  if (meta?.v !== 1) return undefined
  switch (meta.kind) {
    case 'pass':
      return { kind: 'pass' }
    case 'variants':
      return Array.isArray(meta.vary) && meta.vary.every((name) => typeof name === 'string') ? { kind: 'variants', vary: meta.vary as string[] } : undefined
    case 'response': {
      if (typeof meta.status !== 'number' || !isHeaders(meta.headers) || !isPolicyObject(meta.policy)) return undefined
      let policy: CachePolicy
      try {
        policy = CachePolicy.fromObject(meta.policy as CachePolicy.CachePolicyObject)
      } catch {
        return undefined
      }
      return { kind: 'response', policy, status: meta.status, headers: meta.headers, body: value.subarray(4 + length) }
    }
    default:
      return undefined
  }
}

function isHeaders(value: unknown): value is Record<string, string | string[]> {
  if (!isObject(value)) return false
  return Object.values(value).every((v) => typeof v === 'string' || (Array.isArray(v) && v.every((s) => typeof s === 'string')))
}

// What CachePolicy's methods read of its serialised form: anything else would throw from them later (a list where it
// expects a string, say). The response's headers are stored one string each (the cache joins repeated ones).
function isPolicyObject(value: unknown): value is CachePolicy.CachePolicyObject {
  if (!isObject(value)) return false
  const flat = isObject(value.resh) && Object.values(value.resh).every((v) => typeof v === 'string')
  return value.v === 1 && typeof value.t === 'number' && typeof value.st === 'number' && flat && isObject(value.rescc) && isObject(value.reqcc) && (value.reqh === null || isHeaders(value.reqh))
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}
