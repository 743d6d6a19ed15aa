import { Agent, Dispatcher } from 'undici'

/**
 * reply-from sends every request through one dispatcher and takes no per-request options beyond a response timeout.
 * What a route adds (its connect timeout, and aborting when the client goes away) travels with the request headers
 * under this symbol key: undici only reads string keys, so it never reaches the upstream.
 */
export const kForwardOptions = Symbol('portico.forwardOptions')

/**
 * One forward attempt's link to its upstream request. A plain object rather than an AbortSignal: EventTarget
 * listeners cost more per request than the whole routing step.
 */
export class ForwardOptions {
  readonly connectTimeoutMs: number
  #abortUpstream: ((reason: Error) => void) | undefined
  #abortedWith: Error | undefined

  constructor(connectTimeoutMs: number) {
    this.connectTimeoutMs = connectTimeoutMs
  }

  /** Aborts the upstream request (the client went away, or a deadline passed), now or as soon as it starts. */
  abort(reason: Error): void {
    this.#abortedWith ??= reason
    this.#abortUpstream?.(reason)
  }

  get aborted(): boolean {
    return this.#abortedWith !== undefined
  }

  /** Called when the upstream request starts; aborting a request that has completed does nothing. */
  attach(abortUpstream: (reason: Error) => void): void {
    if (this.#abortedWith) abortUpstream(this.#abortedWith)
    else this.#abortUpstream = abortUpstream
  }
}

export interface UpstreamPoolOptions {
  /** Most connections kept open to one instance; further requests queue. */
  readonly connectionsPerInstance: number
  /** How long an idle keep-alive connection is kept (upstreams that say less are believed). */
  readonly keepAliveTimeoutMs: number
}

export const DEFAULT_POOL: UpstreamPoolOptions = { connectionsPerInstance: 128, keepAliveTimeoutMs: 4_000 }

/**
 * Keep-alive connection pools to upstream instances, one undici Agent per distinct connect timeout (a handful at
 * most: timeouts come from route files), each holding one bounded pool per instance origin.
 */
export class UpstreamDispatcher extends Dispatcher {
  readonly #pool: UpstreamPoolOptions
  readonly #agents = new Map<number, Agent>()

  constructor(pool: UpstreamPoolOptions = DEFAULT_POOL) {
    super()
    this.#pool = pool
  }

  override dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const forward = (options.headers as Record<symbol, ForwardOptions | undefined> | undefined)?.[kForwardOptions]
    const agent = this.#agentFor(forward?.connectTimeoutMs ?? 5_000)
    return agent.dispatch(options, forward ? (new AbortableRequest(handler as RequestHandler, forward) as unknown as Dispatcher.DispatchHandler) : handler)
  }

  override async close(): Promise<void> {
    await Promise.all([...this.#agents.values()].map((a) => a.close()))
  }

  override async destroy(): Promise<void> {
    await Promise.all([...this.#agents.values()].map((a) => a.destroy()))
  }

  #agentFor(connectTimeoutMs: number): Agent {
    let agent = this.#agents.get(connectTimeoutMs)
    if (!agent) {
      agent = new Agent({
        connections: this.#pool.connectionsPerInstance,
        keepAliveTimeout: this.#pool.keepAliveTimeoutMs,
        keepAliveMaxTimeout: Math.max(this.#pool.keepAliveTimeoutMs, 60_000),
        connect: { timeout: connectTimeoutMs },
      })
      this.#agents.set(connectTimeoutMs, agent)
    }
    return agent
  }
}

/** The callback-style handler of undici's request API, which reply-from uses. */
interface RequestHandler {
  onConnect(abort: (reason?: Error) => void, context: unknown): void
  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void, statusMessage: string): boolean
  onData(chunk: Buffer): boolean
  onComplete(trailers: string[] | null): void
  onError(error: Error): void
}

/**
 * Hands the request's abort function to its ForwardOptions and passes everything else through. One small class that
 * every forwarded request goes through keeps undici's call sites monomorphic; patching onConnect on each handler
 * instead made every request ~25 % slower (measured with bench/).
 */
class AbortableRequest implements RequestHandler {
  readonly #inner: RequestHandler
  readonly #forward: ForwardOptions

  constructor(inner: RequestHandler, forward: ForwardOptions) {
    this.#inner = inner
    this.#forward = forward
  }

  onConnect(abort: (reason?: Error) => void, context: unknown): void {
    this.#forward.attach(abort)
    this.#inner.onConnect(abort, context)
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void, statusMessage: string): boolean {
    return this.#inner.onHeaders(statusCode, rawHeaders, resume, statusMessage)
  }

  onData(chunk: Buffer): boolean {
    return this.#inner.onData(chunk)
  }

  onComplete(trailers: string[] | null): void {
    this.#inner.onComplete(trailers)
  }

  onError(error: Error): void {
    this.#inner.onError(error)
  }
}
