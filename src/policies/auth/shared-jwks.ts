import { createLocalJWKSet, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose'
import { request } from 'undici'
import { parseJsonObject } from '../../kernel/json.js'
import type { Logger } from '../../kernel/logger.js'
import type { SharedState } from '../../state/shared-state.js'

/** An unknown `kid` fetches again at most this often, per JWKS and fleet-wide (1 000 such tokens: one fetch). */
export const REFETCH_AFTER_MS = 30_000
/** Without an unknown `kid`, the set is fetched again this often, so that a key the provider dropped is dropped here. */
const REFRESH_MS = 10 * 60_000
const FETCH_TIMEOUT_MS = 5_000
/** A JWKS is a few kilobytes; a provider (or a man in the middle) sending more is refused. */
const MAX_JWKS_BYTES = 512 * 1024
/** How long a replica waits for the copy another replica is fetching, and how often it looks. */
const WAIT_FOR_PEER_MS = FETCH_TIMEOUT_MS + 1_000
const PEER_POLL_MS = 100

interface KeySet {
  readonly fetchedAt: number
  readonly jwks: JSONWebKeySet
  readonly resolve: JWTVerifyGetKey
  readonly kids: ReadonlySet<string>
}

/**
 * One JWKS, fetched once per fleet: the replica that fetches stores it in Redis, the others read it there. A token with
 * an unknown `kid` asks for a fresh copy at most every REFETCH_AFTER_MS (a Redis lock makes that fleet-wide); a failed
 * fetch keeps the last good set, and `stale` says so. Without Redis, the same per process.
 */
export class SharedJwks {
  readonly uri: string
  readonly #state: SharedState | undefined
  readonly #logger: Logger
  readonly #key: string
  readonly #lock: string
  #set: KeySet | undefined
  #lastRefetch = Number.NEGATIVE_INFINITY
  #loading: Promise<void> | undefined
  /** Why the last fetch failed, until one succeeds. */
  #failure: string | undefined
  readonly #timer: NodeJS.Timeout
  #users = 0

  constructor(uri: string, state: SharedState | undefined, logger: Logger) {
    this.uri = uri
    this.#state = state
    this.#logger = logger
    this.#key = `portico:jwks:${uri}`
    this.#lock = `portico:jwks-fetch:${uri}`
    this.#timer = setInterval(() => void this.#load(false), REFRESH_MS)
    this.#timer.unref()
  }

  /** The key set, loading it first when there is none yet; undefined when none could be had. */
  async keys(): Promise<KeySet | undefined> {
    if (!this.#set) await this.#load(false)
    return this.#set
  }

  /** The set as it is now, without waiting. */
  current(): KeySet | undefined {
    return this.#set
  }

  /** A token named a `kid` the set lacks: fetch again, unless that was done (fleet-wide) in the last 30 s. */
  async refetchForUnknownKid(): Promise<void> {
    if (Date.now() - this.#lastRefetch < REFETCH_AFTER_MS) return this.#loading
    this.#lastRefetch = Date.now()
    await this.#load(true)
  }

  /** Why the set is stale (the provider could not be reached), or undefined when its last fetch worked. */
  stale(): string | undefined {
    return this.#failure
  }

  acquire(): this {
    this.#users++
    return this
  }

  /** True once no route uses it any more. */
  release(): boolean {
    if (--this.#users > 0) return false
    clearInterval(this.#timer)
    return true
  }

  #load(unknownKid: boolean): Promise<void> {
    this.#loading ??= this.#loadOnce(unknownKid)
      .catch((error: unknown) => {
        this.#failure = (error as Error).message
        this.#logger.warn({ jwksUri: this.uri, err: error }, this.#set ? 'JWKS could not be fetched; its last good copy stays in use' : 'JWKS could not be fetched; tokens cannot be verified until it is')
      })
      .finally(() => {
        this.#loading = undefined
      })
    return this.#loading
  }

  async #loadOnce(unknownKid: boolean): Promise<void> {
    const state = this.#state
    // Redis failing midway is no reason to stop verifying: this replica fetches for itself, as without Redis.
    const fetchHere = state?.isUp()
      ? await this.#fromFleet(unknownKid, state).catch((error: unknown) => {
          this.#logger.warn({ jwksUri: this.uri, err: error }, 'Redis did not answer for the JWKS; this replica fetches it itself')
          return true
        })
      : true
    if (!fetchHere) return
    const fetched = await fetchJwks(this.uri)
    this.#adopt(fetched, true)
    if (state?.isUp()) await state.redis.set(this.#key, JSON.stringify({ fetchedAt: fetched.fetchedAt, jwks: fetched.jwks })).catch(() => undefined)
  }

  /**
   * The fleet's copy, when it serves: true when this replica is to fetch (it claimed the fleet's fetch, or the replica
   * that did stored nothing in time and this one has no set at all). Throws when Redis fails.
   */
  async #fromFleet(unknownKid: boolean, state: SharedState): Promise<boolean> {
    const had = this.#set?.fetchedAt ?? 0
    const shared = await this.#readShared()
    if (shared && shared.fetchedAt > had) this.#adopt(shared, false)
    // A copy fresh enough for what was asked: another replica fetched it.
    const wanted = unknownKid ? REFETCH_AFTER_MS : REFRESH_MS
    if (shared && Date.now() - shared.fetchedAt < wanted) return false
    // One replica fetches for the fleet; the lock also spaces fetches REFETCH_AFTER_MS apart.
    if ((await state.redis.set(this.#lock, state.replicaId, 'PX', REFETCH_AFTER_MS, 'NX')) === 'OK') return true
    const deadline = Date.now() + WAIT_FOR_PEER_MS
    while (Date.now() < deadline) {
      const copy = await this.#readShared()
      if (copy && copy.fetchedAt > (shared?.fetchedAt ?? 0)) {
        this.#adopt(copy, false)
        return false
      }
      await new Promise((resolve) => setTimeout(resolve, PEER_POLL_MS))
    }
    return this.#set === undefined
  }

  async #readShared(): Promise<KeySet | undefined> {
    const state = this.#state as SharedState
    const text = await state.redis.get(this.#key)
    if (text === null) return undefined
    const value = parseJsonObject(text)
    const set = value && typeof value.fetchedAt === 'number' ? keySet(value.jwks, value.fetchedAt) : undefined
    if (!set) {
      state.reportJunk(this.#key, `JWKS of ${this.uri}: a value that is not one Portico stored, ignored`)
      await state.redis.del(this.#key)
    }
    return set
  }

  #adopt(set: KeySet, fetchedHere: boolean): void {
    if (fetchedHere) this.#failure = undefined
    const before = this.#set
    this.#set = set
    if (before && [...before.kids].some((kid) => !set.kids.has(kid))) this.#logger.info({ jwksUri: this.uri, kids: [...set.kids] }, 'JWKS changed: keys it no longer lists are refused')
  }
}

/** A JWKS as anyone could have written it (the provider, a Redis peer): undefined unless it is one. */
function keySet(jwks: unknown, fetchedAt: number): KeySet | undefined {
  if (typeof jwks !== 'object' || jwks === null || !Array.isArray((jwks as { keys?: unknown }).keys)) return undefined
  const keys = (jwks as { keys: unknown[] }).keys.filter((k): k is JSONWebKeySet['keys'][number] => typeof k === 'object' && k !== null && typeof (k as { kty?: unknown }).kty === 'string')
  try {
    const set = { keys }
    return { fetchedAt, jwks: set, resolve: createLocalJWKSet(set), kids: new Set(keys.flatMap((k) => (typeof k.kid === 'string' ? [k.kid] : []))) }
  } catch {
    return undefined
  }
}

async function fetchJwks(uri: string): Promise<KeySet> {
  const response = await request(uri, { method: 'GET', headers: { accept: 'application/json' }, headersTimeout: FETCH_TIMEOUT_MS, bodyTimeout: FETCH_TIMEOUT_MS })
  if (response.statusCode !== 200) {
    response.body.destroy()
    throw new Error(`${uri} answered ${response.statusCode}`)
  }
  let size = 0
  const chunks: Buffer[] = []
  for await (const chunk of response.body) {
    size += (chunk as Buffer).length
    if (size > MAX_JWKS_BYTES) {
      response.body.destroy()
      throw new Error(`${uri} sent more than ${MAX_JWKS_BYTES} bytes`)
    }
    chunks.push(chunk as Buffer)
  }
  const set = keySet(parseJsonObject(Buffer.concat(chunks).toString('utf8')), Date.now())
  if (!set) throw new Error(`${uri} did not answer a JWKS (a JSON object with "keys")`)
  return set
}

/** The JWKS of each URI one gateway's routes use: routes naming the same URI share it (and its fetches). */
export class JwksRegistry {
  readonly #sets = new Map<string, SharedJwks>()

  acquire(uri: string, state: SharedState | undefined, logger: Logger): SharedJwks {
    let set = this.#sets.get(uri)
    if (!set) this.#sets.set(uri, (set = new SharedJwks(uri, state, logger)))
    return set.acquire()
  }

  release(set: SharedJwks): void {
    if (set.release()) this.#sets.delete(set.uri)
  }
}
