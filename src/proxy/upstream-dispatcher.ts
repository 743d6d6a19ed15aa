import { Agent, Dispatcher } from 'undici'

/**
 * reply-from sends every request through one dispatcher and takes no per-request options beyond a response timeout.
 * What a route adds (its connect timeout, and aborting when the client goes away) travels with the request headers
 * under this symbol key: undici only reads string keys, so it never reaches the upstream.
 */
export const kAttemptSignal = Symbol('portico.attemptSignal')

/**
 * One forward attempt's link to its upstream request, handed to undici as the request's `signal`. undici takes an
 * EventEmitter-style signal (`once`/`removeListener`); this one is two fields, where an AbortController's EventTarget
 * cost more per request than the whole routing step.
 */
export class AttemptSignal {
  readonly connectTimeoutMs: number
  aborted = false
  reason: Error | undefined
  #listener: (() => void) | undefined

  constructor(connectTimeoutMs: number) {
    this.connectTimeoutMs = connectTimeoutMs
  }

  /** Aborts the upstream request (the client went away), now or as soon as it starts. */
  abort(reason: Error): void {
    if (this.aborted) return
    this.aborted = true
    this.reason = reason
    this.#listener?.()
  }

  // undici checks that a signal has `on`, then listens with `once`: one listener at most, as undici uses it.
  on(_event: 'abort', listener: () => void): void {
    this.#listener = listener
  }

  once(_event: 'abort', listener: () => void): void {
    this.#listener = listener
  }

  removeListener(_event: 'abort', listener: () => void): void {
    if (this.#listener === listener) this.#listener = undefined
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
    const signal = (options.headers as Record<symbol, AttemptSignal | undefined> | undefined)?.[kAttemptSignal]
    return this.#agentFor(signal?.connectTimeoutMs ?? 5_000).dispatch(options, handler)
  }

  /** reply-from calls this; the attempt's AttemptSignal becomes the request's abort signal. */
  override request(...args: Parameters<Dispatcher['request']>): ReturnType<Dispatcher['request']> {
    const options = args[0] as Dispatcher.RequestOptions & { signal?: unknown }
    const signal = (options.headers as Record<symbol, AttemptSignal | undefined> | undefined)?.[kAttemptSignal]
    if (signal) options.signal = signal
    return (super.request as (...a: unknown[]) => ReturnType<Dispatcher['request']>)(...args)
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

