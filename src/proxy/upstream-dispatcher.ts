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
    if (forward) {
      // reply-from dispatches through undici's request API, whose handler receives the request's abort function in
      // onConnect. Catching it there costs one closure; wrapping the handler would add a layer to every body chunk.
      const legacy = handler as { onConnect?: (abort: (reason?: Error) => void, context: unknown) => void }
      const onConnect = legacy.onConnect
      if (onConnect) {
        legacy.onConnect = (abort, context) => {
          forward.attach(abort)
          onConnect.call(handler, abort, context)
        }
      }
    }
    return agent.dispatch(options, handler)
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
