import CachePolicy from 'http-cache-semantics'
import type { IncomingHttpHeaders } from 'node:http'
import { GatewayError } from '../../kernel/errors.js'
import { parseJsonObject } from '../../kernel/json.js'
import { PolicyCounter } from '../policy-events.js'
import { RequestValue, type AttemptWrapper, type BodySink, type PolicyDeps, type PolicyExchange, type PolicyKind, type PolicyRoute, type RequestGuard, type UpstreamBody, type UpstreamResponse } from '../policy.js'
import { keyText, MemoryStore, RedisStore, type CacheEntry, type CacheKey, type CacheStore, type StoredResponse } from './cache-store.js'
import { ResponseCacheSchema, toResponseCacheConfig, type ResponseCacheConfig, type ResponseCacheSpec } from './schema.js'

const LOOKUPS = new PolicyCounter('portico_cache_requests_total', 'Requests that looked in a route\'s cache, by outcome: hit, collapsed (hit after waiting for another request\'s fetch), miss, revalidate (stale entry checked upstream), bypass (the key\'s answers cannot be kept).', 'outcome')
const STALE_SERVED = new PolicyCounter('portico_cache_stale_served_total', 'Stale entries answered, by route and why: on_error (staleIfError) or while_revalidating (staleWhileRevalidate).', 'reason')
const WAITS = new PolicyCounter('portico_cache_coalesced_waits_total', 'Requests that waited for another request\'s fetch of the same key: in this replica (coalesced) or in another (fleet).', 'scope')
const EVICTIONS = new PolicyCounter('portico_cache_evictions_total', 'Entries the memory store let go to stay within maxSize, by route.', 'reason')

const megabytes = (bytes: number): string => (bytes / 1_048_576).toFixed(1)

export const responseCachePolicy: PolicyKind<ResponseCacheSpec, ResponseCacheConfig, ResponseCache> = {
  key: 'cache',
  schema: ResponseCacheSchema,
  toConfig: toResponseCacheConfig,
  create: (route, config, deps) => new ResponseCache(route, config, deps),
  counters: [LOOKUPS, STALE_SERVED, WAITS, EVICTIONS],
  gauges: [{ name: 'portico_cache_bytes', help: 'Bytes of cache entries held in this process, by route (a Redis store holds its entries in Redis).', read: (cache) => cache.held.bytes }],
  column: {
    title: 'Cache',
    attribute: 'cache',
    cell: (cache, route, { events }) => {
      if (!cache) return undefined
      let lookups = 0
      let hits = 0
      for (const [outcome, count] of events.ofRoute(LOOKUPS, route)) {
        lookups += count
        if (outcome === 'hit' || outcome === 'collapsed') hits += count
      }
      return { mark: cache.storeName, text: `${lookups ? Math.round((100 * hits) / lookups) : 0}% hits of ${lookups} · ${megabytes(cache.held.bytes)} MB (${cache.storeName})` }
    },
  },
  adminActions: [
    {
      method: 'DELETE',
      url: '/admin/cache/:name',
      audit: 'cache purge',
      missing: 'has no cache',
      run: async (cache, { route, query: { path }, upstreamPathOf }) => {
        // The path as clients ask for it; entries are kept under what the upstream is asked for.
        const upstreamPath = path === undefined ? undefined : upstreamPathOf(path)
        const purged = await cache.purge(upstreamPath).catch((error: unknown) => {
          throw new GatewayError('state_unavailable', `The cache in Redis could not be purged (${(error as Error).message})`, { cause: error })
        })
        return { answer: { route: route.name, path: path ?? null, purged }, ...(path === undefined ? {} : { detail: { path } }) }
      },
    },
  ],
}

/** RFC 9211 Cache-Status values this cache answers with, and what each is in one word (the access log's `cache`). */
const STATUS = {
  hit: ['Portico; hit', 'hit'],
  collapsed: ['Portico; hit; collapsed', 'hit'],
  stale: ['Portico; hit; detail=stale', 'stale'],
  miss: ['Portico; fwd=miss', 'miss'],
  stored: ['Portico; fwd=miss; stored', 'miss'],
  revalidated: ['Portico; fwd=stale; fwd-status=304', 'revalidated'],
  refreshed: ['Portico; fwd=stale; stored', 'revalidated'],
  revalidating: ['Portico; fwd=stale', 'revalidated'],
} as const satisfies Record<string, readonly [string, string]>

/** What the cache did for a request: the access log's `cache` field, and an attribute of the request's span. */
export const CACHE_OUTCOME = new RequestValue<(typeof STATUS)[keyof typeof STATUS][1]>('cache.outcome', { logField: 'cache', spanAttribute: 'portico.cache.outcome' })

// Statuses a shared cache may keep whole (RFC 9111 §3, less the partial 206 and the redirects that depend on the request).
const STORABLE_STATUSES = new Set([200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501])
// Never kept: they describe one connection or one answer, or the gateway sets them on every answer itself.
const UNSTORED_HEADERS = new Set(['age', 'cache-status', 'connection', 'content-length', 'keep-alive', 'transfer-encoding', 'set-cookie', 'proxy-connection', 'upgrade', 'x-request-id'])
// Forwarded headers every key includes, whatever the route's `vary` and the upstream's Vary say.
const KEYED_HEADERS = ['host', 'x-forwarded-host', 'x-forwarded-proto'] as const
const CHANNEL = 'portico:cache:purge'
const FLEET_POLL_MS = 25

/** One request's dealings with the cache, from the guard to the end of its upstream answer. */
interface Lookup {
  readonly key: CacheKey
  /** Where the response entry is (the key itself, or a variant of it). */
  entryKey: CacheKey
  /** A stale entry found: revalidated upstream, or answered when the upstream fails (staleIfError). */
  stale: StoredResponse | undefined
  /** Set on the request that fetches the key for the others (per replica). */
  flight: Flight | undefined
  /** Headers on the reply before the upstream answered (the gateway's own, e.g. RateLimit): not part of the entry. */
  readonly preset: ReadonlySet<string>
}

/** The one upstream fetch of a key in this replica; the others wait for its end, then look again. */
class Flight {
  readonly #waiters: (() => void)[] = []
  #done = false

  wait(resume: () => void, boundMs: number): void {
    let resumed = false
    const once = () => {
      if (resumed) return
      resumed = true
      clearTimeout(timer)
      resume()
    }
    // Past the bound the waiter goes upstream itself: a slow fetch must not hold every request of the key.
    const timer = setTimeout(once, boundMs)
    this.#waiters.push(once)
  }

  finish(): boolean {
    if (this.#done) return false
    this.#done = true
    for (const resume of this.#waiters) resume()
    return true
  }
}

/**
 * A route's response cache. The guard answers fresh entries (after the rate and concurrency limits, which a hit still
 * counts against) and makes concurrent misses of one key wait for one fetch; the wrapper, outermost around retries and
 * the breaker, stores what the upstream answers while it streams to the client, revalidates stale entries, and
 * answers a stale entry instead of an upstream failure within `staleIfError`.
 */
class ResponseCache {
  readonly guard: RequestGuard
  readonly wrap: AttemptWrapper
  readonly #route: PolicyRoute
  readonly #config: ResponseCacheConfig
  readonly #deps: PolicyDeps
  readonly #store: CacheStore
  readonly #memory: MemoryStore
  readonly #lookups = new WeakMap<PolicyExchange, Lookup>()
  readonly #flights = new Map<string, Flight>()
  readonly #onPurgeMessage: (channel: string, message: string) => void

  constructor(route: PolicyRoute, config: ResponseCacheConfig, deps: PolicyDeps) {
    this.#route = route
    this.#config = config
    this.#deps = deps
    this.#memory = new MemoryStore(config.maxBytes, () => deps.events.count(EVICTIONS, route.name, 'evicted'))
    const { state } = deps
    this.#store =
      config.store === 'redis' && state
        ? new RedisStore(state, route.name, this.#memory, (key) => state.reportJunk(key, `route "${route.name}": a cache entry this version did not write, taken for a miss`))
        : this.#memory
    // Other replicas' purges reach this one's memory (the whole store, or the fallback of a Redis store).
    this.#onPurgeMessage = (channel, message) => {
      if (channel !== CHANNEL) return
      const purge = parseJsonObject(message)
      if (purge?.v === 1 && purge.route === route.name && purge.from !== state?.replicaId) void this.#memory.purge(typeof purge.path === 'string' ? purge.path : undefined)
    }
    if (state) {
      state.subscriber.on('message', this.#onPurgeMessage)
      void state.subscriber.subscribe(CHANNEL).catch(() => undefined)
    }
    this.guard = (ex, next) => this.#admit(ex, next)
    this.wrap = (send) => (ex, handler) => {
      const lookup = this.#lookups.get(ex)
      if (!lookup) return send(ex, handler)
      send(ex, {
        onResponse: (ex, res) => this.#answered(ex, res, lookup, handler.onResponse.bind(handler)),
        onError: (ex, error) => {
          this.#endFlight(lookup)
          if (this.#staleUsable(lookup, this.#config.staleIfErrorMs) && !ex.reply.sent && !ex.clientGone) return this.#answerFromEntry(ex, lookup.stale as StoredResponse, 'stale', 'on_error')
          handler.onError(ex, error)
        },
      })
    }
  }

  /** What this process holds of the route's entries (a Redis store: its memory fallback). */
  get held(): { readonly bytes: number; readonly entries: number } {
    return this.#store.held
  }

  get storeName(): 'redis' | 'memory' {
    return this.#store instanceof RedisStore ? 'redis' : 'memory'
  }

  describe(): Record<string, unknown> {
    const { bytes, entries } = this.held
    return { store: this.storeName, entriesHere: entries, bytesHere: bytes, maxBytes: this.#config.maxBytes }
  }

  /** Drops the route's entries (or one upstream path's) on every replica. */
  async purge(path: string | undefined): Promise<number> {
    const { state } = this.#deps
    const count = await this.#store.purge(path)
    if (state?.isUp()) await state.redis.publish(CHANNEL, JSON.stringify({ v: 1, route: this.#route.name, path, from: state.replicaId })).catch(() => undefined)
    return count
  }

  stop(): void {
    this.#deps.state?.subscriber.off('message', this.#onPurgeMessage)
    for (const flight of this.#flights.values()) flight.finish()
    this.#flights.clear()
  }

  /** The guard: a cacheable request gets a lookup; what it finds decides whether it goes upstream. */
  #admit(ex: PolicyExchange, next: (error?: Error) => void): void {
    const { request } = ex
    if (!this.#config.methods.has(request.method) || request.headers.range !== undefined) return next()
    const path = ex.upstreamPath
    const forwarded = ex.forwardedHeaders()
    // What the gateway forwards from the client that can change the answer is in every key: the Host (sent on as
    // X-Forwarded-Host, or as Host with preserveHost), and the scheme and host a trusted proxy passed on.
    let rest = `${request.method}\n${ex.upstreamUrl.slice(path.length + 1)}`
    for (const name of KEYED_HEADERS) rest += `\n${headerText(forwarded[name])}`
    // What policies before the cache sent upstream (a tenant header, an identity) can change the answer too.
    for (const [name, value] of ex.upstreamHeaderChanges ?? []) rest += value === undefined ? `\n${name}` : `\n${name}: ${value}`
    for (const name of this.#config.vary) rest += `\n${name}:${headerText(forwarded[name])}`
    const key = { path, rest }
    const lookup: Lookup = { key, entryKey: key, stale: undefined, flight: undefined, preset: new Set(Object.keys(ex.reply.getHeaders())) }
    this.#lookups.set(ex, lookup)
    this.#consult(ex, lookup, next, true)
  }

  #consult(ex: PolicyExchange, lookup: Lookup, next: (error?: Error) => void, mayWait: boolean): void {
    const found = this.#find(ex, lookup)
    if (found instanceof Promise) found.then((entry) => this.#decide(ex, lookup, next, mayWait, entry), () => this.#decide(ex, lookup, next, mayWait, undefined))
    else this.#decide(ex, lookup, next, mayWait, found)
  }

  /** The entry for the request: its key's, or through the upstream's Vary, its variant's. */
  #find(ex: PolicyExchange, lookup: Lookup): CacheEntry | undefined | Promise<CacheEntry | undefined> {
    const atKey = this.#store.get(lookup.key)
    const follow = (entry: CacheEntry | undefined) => {
      if (entry?.kind !== 'variants') return entry
      lookup.entryKey = variantKey(lookup.key, entry.vary, ex.forwardedHeaders())
      return this.#store.get(lookup.entryKey)
    }
    return atKey instanceof Promise ? atKey.then(follow) : follow(atKey)
  }

  #decide(ex: PolicyExchange, lookup: Lookup, next: (error?: Error) => void, mayWait: boolean, entry: CacheEntry | undefined): void {
    if (ex.clientGone) return
    if (entry?.kind === 'pass') {
      this.#count('bypass')
      return next()
    }
    if (entry?.kind === 'response') {
      if (isFresh(entry, ex)) {
        this.#count(mayWait ? 'hit' : 'collapsed')
        return this.#answerFromEntry(ex, entry, mayWait ? 'hit' : 'collapsed')
      }
      lookup.stale = entry
      // Someone revalidates it already: within staleWhileRevalidate the others need not wait.
      if (this.#flights.has(keyText(lookup.key)) && this.#staleUsable(lookup, this.#config.staleWhileRevalidateMs)) return this.#answerFromEntry(ex, entry, 'stale', 'while_revalidating')
      if (this.#staleUsable(lookup, this.#config.staleIfErrorMs) && noInstance(ex)) return this.#answerFromEntry(ex, entry, 'stale', 'on_error')
    }
    const id = keyText(lookup.key)
    const flight = this.#flights.get(id)
    if (flight && mayWait) {
      this.#deps.events.count(WAITS, this.#route.name, 'coalesced')
      return flight.wait(() => this.#consult(ex, lookup, next, false), this.#route.timeout.responseMs)
    }
    if (flight) return this.#goUpstream(ex, lookup, next)
    this.#lead(ex, lookup, next, id)
  }

  /** This request fetches the key for the replica; with a Redis store, first for the fleet, or it waits for who does. */
  #lead(ex: PolicyExchange, lookup: Lookup, next: (error?: Error) => void, id: string): void {
    const flight = new Flight()
    this.#flights.set(id, flight)
    lookup.flight = flight
    // However the request ends (the client gone included), the replica's waiters are let go.
    ex.onEnd(() => this.#endFlight(lookup))
    if (this.#store === this.#memory) return this.#goUpstream(ex, lookup, next)
    const boundMs = this.#route.timeout.responseMs
    const deadline = Date.now() + boundMs
    let waited = false
    /** Answers a fresh entry another replica stored; false when there is none. */
    const answered = (entry: CacheEntry | undefined): boolean => {
      if (entry?.kind !== 'response' || !isFresh(entry, ex)) return false
      this.#count('collapsed')
      this.#endFlight(lookup)
      this.#answerFromEntry(ex, entry, 'collapsed')
      return true
    }
    const look = (then: (entry: CacheEntry | undefined) => void) => {
      Promise.resolve(this.#find(ex, lookup)).then(then, () => this.#goUpstream(ex, lookup, next))
    }
    const tryLead = (): void => {
      this.#store.lead(lookup.key, boundMs).then(
        (leading) => {
          if (ex.clientGone) return
          // Leading after a wait: the fetch that held the lock stores its entry before it lets go, so look once more.
          if (leading) return waited ? look((entry) => answered(entry) || this.#goUpstream(ex, lookup, next)) : this.#goUpstream(ex, lookup, next)
          if (this.#staleUsable(lookup, this.#config.staleWhileRevalidateMs)) {
            this.#endFlight(lookup)
            return this.#answerFromEntry(ex, lookup.stale as StoredResponse, 'stale', 'while_revalidating')
          }
          if (!waited) this.#deps.events.count(WAITS, this.#route.name, 'fleet')
          waited = true
          // Another replica fetches it: wait for its entry, or past the bound go upstream.
          look((entry) => {
            if (answered(entry)) return
            if (entry?.kind === 'pass' || Date.now() >= deadline) return this.#goUpstream(ex, lookup, next)
            setTimeout(tryLead, FLEET_POLL_MS)
          })
        },
        () => this.#goUpstream(ex, lookup, next),
      )
    }
    tryLead()
  }

  #goUpstream(ex: PolicyExchange, lookup: Lookup, next: (error?: Error) => void): void {
    if (ex.clientGone) return
    this.#count(lookup.stale ? 'revalidate' : 'miss')
    const stale = lookup.stale
    if (stale) {
      // Ask with the stored validators: a 304 refreshes the entry without its body crossing the wire again.
      const headers = stale.policy.revalidationHeaders(policyRequest(ex))
      const request = ex.request.headers
      for (const name of ['if-none-match', 'if-modified-since'] as const) {
        if (headers[name] === undefined) delete request[name]
        else request[name] = headerText(headers[name])
      }
    }
    next()
  }

  /** The upstream answered a request that looked in the cache. */
  #answered(ex: PolicyExchange, res: UpstreamResponse, lookup: Lookup, onResponse: (ex: PolicyExchange, res: UpstreamResponse) => void): void {
    const { stale } = lookup
    const upstreamHeaders = flatHeaders(res.headers)
    if (stale && res.statusCode === 304) {
      const { policy, modified } = stale.policy.revalidatedPolicy(policyRequest(ex), { status: res.statusCode, headers: upstreamHeaders })
      if (!modified) {
        ex.discard(res)
        const refreshed: StoredResponse = { ...stale, policy, headers: { ...stale.headers, ...storableHeaders(res.headers, lookup.preset, false) } }
        this.#put(lookup.entryKey, refreshed)
        this.#endFlight(lookup)
        return this.#answerFromEntry(ex, refreshed, 'revalidated')
      }
    }
    if (res.statusCode >= 500 && this.#staleUsable(lookup, this.#config.staleIfErrorMs)) {
      ex.discard(res)
      this.#endFlight(lookup)
      return this.#answerFromEntry(ex, stale as StoredResponse, 'stale', 'on_error')
    }
    const policy = this.#storablePolicy(ex, res.statusCode, upstreamHeaders)
    if (!policy) {
      says(ex, 'miss', upstreamHeaders['cache-status'])
      // A key whose answers cannot be kept: its requests stop waiting for one another.
      if (lookup.flight) this.#put(lookup.key, { kind: 'pass' }, this.#config.ttlMs)
      this.#endFlight(lookup)
      return onResponse(ex, res)
    }
    // `stored` only when the length says so now: a body of unknown length may still outgrow maxEntrySize.
    const storedForSure = upstreamHeaders['content-length'] !== undefined || ex.request.method === 'HEAD'
    says(ex, stale ? (storedForSure ? 'refreshed' : 'revalidating') : storedForSure ? 'stored' : 'miss', upstreamHeaders['cache-status'])
    const headers = storableHeaders(ex.reply.getHeaders(), lookup.preset, ex.request.method === 'HEAD')
    const vary = varyOf(upstreamHeaders.vary, this.#config.vary)
    const collecting = new CollectingBody(res.stream, this.#config.maxEntryBytes, (body) => {
      if (body !== undefined) {
        if (vary.length > 0) {
          this.#put(lookup.key, { kind: 'variants', vary }, policy.timeToLive() + this.#keptStaleMs())
          lookup.entryKey = variantKey(lookup.key, vary, ex.forwardedHeaders())
        }
        this.#put(lookup.entryKey, { kind: 'response', policy, status: res.statusCode, headers, body })
      }
      this.#endFlight(lookup)
    })
    onResponse(ex, { ...res, stream: collecting })
  }

  /** The policy of a response the cache may keep, or undefined. */
  #storablePolicy(ex: PolicyExchange, status: number, headers: Readonly<Record<string, string>>): CachePolicy | undefined {
    if (!STORABLE_STATUSES.has(status) || headers['set-cookie'] !== undefined || headers.vary?.trim() === '*') return undefined
    const length = Number(headers['content-length'])
    if (length > this.#config.maxEntryBytes) return undefined
    const request = policyRequest(ex)
    // The route's ttl for a response that says nothing of its freshness; never for one asked with credentials.
    const saysNothing = headers.expires === undefined && !/\b(s-maxage|max-age)\s*=/i.test(headers['cache-control'] ?? '')
    // A Cookie is a credential as much as Authorization (the answer may be that user's), but CachePolicy only knows the
    // latter: kept without a freshness of its own, the answer would still be served stale to others (staleIfError).
    if (saysNothing && request.headers.cookie !== undefined) return undefined
    const withTtl = saysNothing && request.headers.authorization === undefined ? { ...headers, 'cache-control': appendDirective(headers['cache-control'], `s-maxage=${Math.floor(this.#config.ttlMs / 1000)}`) } : headers
    const policy = new CachePolicy(request, { status, headers: withTtl }, { shared: true })
    return policy.storable() ? policy : undefined
  }

  #put(key: CacheKey, entry: CacheEntry, ttlMs?: number): void {
    const ms = ttlMs ?? (entry.kind === 'response' ? entry.policy.timeToLive() + this.#keptStaleMs() : this.#config.ttlMs)
    if (ms > 0) this.#store.set(key, entry, ms)
  }

  /** How long past its freshness an entry is still of use. */
  #keptStaleMs(): number {
    return Math.max(this.#config.staleIfErrorMs, this.#config.staleWhileRevalidateMs)
  }

  #staleUsable(lookup: Lookup, windowMs: number): boolean {
    const { stale } = lookup
    if (!stale || windowMs === 0) return false
    const pastFreshMs = (stale.policy.age() - stale.policy.maxAge()) * 1000
    return pastFreshMs <= windowMs
  }

  #endFlight(lookup: Lookup): void {
    const { flight } = lookup
    if (!flight) return
    lookup.flight = undefined
    const id = keyText(lookup.key)
    if (this.#flights.get(id) === flight) this.#flights.delete(id)
    this.#store.unlead(lookup.key)
    flight.finish()
  }

  /** Answers from an entry; a stale one is counted by why it was answered. */
  #answerFromEntry(ex: PolicyExchange, entry: StoredResponse, outcome: 'hit' | 'collapsed' | 'revalidated'): void
  #answerFromEntry(ex: PolicyExchange, entry: StoredResponse, outcome: 'stale', why: 'on_error' | 'while_revalidating'): void
  #answerFromEntry(ex: PolicyExchange, entry: StoredResponse, outcome: keyof typeof STATUS, why?: string): void {
    if (why !== undefined) this.#deps.events.count(STALE_SERVED, this.#route.name, why)
    const { reply, request } = ex
    const notModified = entry.status === 200 && matchesConditional(request.headers, entry.headers)
    reply.code(notModified ? 304 : entry.status)
    reply.headers(entry.headers)
    reply.header('age', String(Math.floor(entry.policy.age())))
    says(ex, outcome)
    reply.header('x-request-id', request.id)
    // A HEAD entry keeps the upstream's Content-Length: its body is the GET's, which nobody sent.
    if (notModified || request.method === 'HEAD') return void reply.send()
    reply.send(entry.body)
  }

  #count(outcome: string): void {
    this.#deps.events.count(LOOKUPS, this.#route.name, outcome)
  }
}

/**
 * Passes the body through as it comes and keeps a copy up to `limit` bytes; `done` gets the whole body once the upstream
 * finished it, or undefined when it was larger. A body cut short (the upstream or the client gone) never reaches `done`
 * whole: the stream is destroyed, and `done(undefined)` runs when it closes.
 */
/** The answer's body on its way to the client, kept as it passes (up to the entry's limit) for the cache. */
class CollectingBody implements UpstreamBody, BodySink {
  readonly #body: UpstreamBody
  readonly #limit: number
  readonly #done: (body: Buffer | undefined) => void
  #sink: BodySink | undefined = undefined
  #chunks: Buffer[] | undefined = []
  #bytes = 0
  #reported = false

  constructor(body: UpstreamBody, limit: number, done: (body: Buffer | undefined) => void) {
    this.#body = body
    this.#limit = limit
    this.#done = done
  }

  pipeTo(sink: BodySink): void {
    this.#sink = sink
    this.#body.pipeTo(this)
  }

  pause(): void {
    this.#body.pause()
  }

  resume(): void {
    this.#body.resume()
  }

  destroy(): void {
    this.#report(undefined)
    this.#body.destroy()
  }

  data(chunk: Buffer): void {
    if (this.#chunks !== undefined) {
      this.#bytes += chunk.length
      if (this.#bytes > this.#limit) this.#chunks = undefined
      else this.#chunks.push(chunk)
    }
    ;(this.#sink as BodySink).data(chunk)
  }

  end(): void {
    this.#report(this.#chunks && Buffer.concat(this.#chunks, this.#bytes))
    ;(this.#sink as BodySink).end()
  }

  error(error: Error): void {
    this.#report(undefined)
    ;(this.#sink as BodySink).error(error)
  }

  #report(body: Buffer | undefined): void {
    if (this.#reported) return
    this.#reported = true
    this.#chunks = undefined
    this.#done(body)
  }
}

/**
 * The request as CachePolicy reads it: its key's URL, and its headers as forwarded (an upstream's Vary names what it
 * was sent, e.g. X-Forwarded-Host, which the client may never have sent).
 */
function policyRequest(ex: PolicyExchange): CachePolicy.Request {
  return { method: ex.request.method, url: ex.upstreamUrl, headers: ex.forwardedHeaders() as CachePolicy.Headers }
}

/**
 * Whether the entry answers the request without the upstream. An entry this check cannot read (it runs in promise
 * callbacks, where a throw would take the process down) is taken for a miss, and the upstream's answer replaces it.
 */
function isFresh(entry: StoredResponse, ex: PolicyExchange): boolean {
  try {
    return entry.policy.satisfiesWithoutRevalidation(policyRequest(ex))
  } catch {
    return false
  }
}

function noInstance(ex: PolicyExchange): boolean {
  return ex.pickAnother(new Set()) === undefined
}


function variantKey(key: CacheKey, vary: readonly string[], headers: IncomingHttpHeaders): CacheKey {
  let rest = `${key.rest}\n#`
  for (const name of vary) rest += `\n${name}:${headerText(headers[name])}`
  return { path: key.path, rest }
}

/** The upstream's Vary names that the route's own `vary` does not already split on. */
function varyOf(vary: string | undefined, routeVary: readonly string[]): string[] {
  if (vary === undefined) return []
  const names = new Set(vary.split(',').map((name) => name.trim().toLowerCase()).filter((name) => name !== '' && !routeVary.includes(name)))
  return [...names].sort()
}

function storableHeaders(headers: Record<string, unknown>, preset: ReadonlySet<string>, keepLength: boolean): Record<string, string | string[]> {
  const kept: Record<string, string | string[]> = {}
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || preset.has(name) || (UNSTORED_HEADERS.has(name) && !(keepLength && name === 'content-length'))) continue
    kept[name] = Array.isArray(value) ? value.map(String) : String(value)
  }
  return kept
}

/** If-None-Match (weak comparison), else If-Modified-Since, against the entry (RFC 9110 §13.2.2). */
function matchesConditional(request: IncomingHttpHeaders, stored: Readonly<Record<string, string | string[]>>): boolean {
  const ifNoneMatch = request['if-none-match']
  const etag = stored.etag
  if (ifNoneMatch !== undefined) {
    if (ifNoneMatch.trim() === '*') return true
    if (typeof etag !== 'string') return false
    const opaque = (tag: string) => tag.trim().replace(/^W\//, '')
    return ifNoneMatch.split(',').some((tag) => opaque(tag) === opaque(etag))
  }
  const since = request['if-modified-since']
  const lastModified = stored['last-modified']
  if (since === undefined || typeof lastModified !== 'string') return false
  const sinceMs = Date.parse(since)
  const modifiedMs = Date.parse(lastModified)
  return Number.isFinite(sinceMs) && Number.isFinite(modifiedMs) && modifiedMs <= sinceMs
}

/** The upstream's headers as the cache decides on them: one string each (undici hands a repeated header over as a list). */
function flatHeaders(headers: IncomingHttpHeaders): Record<string, string> {
  const flat: Record<string, string> = {}
  for (const [name, value] of Object.entries(headers)) if (value !== undefined) flat[name] = Array.isArray(value) ? value.join(', ') : value
  return flat
}

/** Says what the cache did: in the answer's Cache-Status (after an upstream cache's own), and on the exchange. */
function says(ex: PolicyExchange, status: keyof typeof STATUS, upstream?: string): void {
  const [text, outcome] = STATUS[status]
  ex.reply.header('cache-status', appendStatus(upstream, text))
  ex.set(CACHE_OUTCOME, outcome)
}

function appendStatus(upstream: unknown, ours: string): string {
  return typeof upstream === 'string' && upstream !== '' ? `${upstream}, ${ours}` : ours
}

function appendDirective(cacheControl: string | undefined, directive: string): string {
  return cacheControl === undefined || cacheControl.trim() === '' ? directive : `${cacheControl}, ${directive}`
}

function headerText(value: string | string[] | undefined): string {
  return value === undefined ? '' : Array.isArray(value) ? value.join(', ') : value
}

