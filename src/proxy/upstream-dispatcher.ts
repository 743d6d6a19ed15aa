import { Agent, DecoratorHandler, Dispatcher } from 'undici'

/**
 * reply-from sends every request through one dispatcher and takes no per-request options beyond a response timeout.
 * What a route adds (its connect timeout, and aborting when the client goes away) travels with the request headers
 * under this symbol key: undici only reads string keys, so it never reaches the upstream.
 */
export const kForwardOptions = Symbol('portico.forwardOptions')

export interface ForwardOptions {
  readonly connectTimeoutMs: number
  /** Aborted when the client disconnects or the request's deadline passes. */
  readonly signal: AbortSignal
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
    return agent.dispatch(options, forward ? new AbortOnSignal(handler, forward.signal) : handler)
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

type NewStyleHandler = Required<
  Pick<Dispatcher.DispatchHandler, 'onRequestStart' | 'onRequestUpgrade' | 'onResponseStart' | 'onResponseData' | 'onResponseEnd' | 'onResponseError'>
>

/** Aborts the upstream request when the signal fires; passes everything else through. */
class AbortOnSignal implements Dispatcher.DispatchHandler {
  // DecoratorHandler adapts reply-from's callback-style handler to undici's controller-style one.
  readonly #inner: NewStyleHandler
  readonly #signal: AbortSignal
  #stop: (() => void) | undefined

  constructor(handler: Dispatcher.DispatchHandler, signal: AbortSignal) {
    this.#inner = new DecoratorHandler(handler) as unknown as NewStyleHandler
    this.#signal = signal
  }

  onRequestStart(controller: Dispatcher.DispatchController, context: object): void {
    this.#inner.onRequestStart(controller, context)
    const abort = () => controller.abort(this.#signal.reason as Error)
    if (this.#signal.aborted) return abort()
    this.#signal.addEventListener('abort', abort, { once: true })
    this.#stop = () => this.#signal.removeEventListener('abort', abort)
  }

  onRequestUpgrade(...args: Parameters<NewStyleHandler['onRequestUpgrade']>): void {
    this.#inner.onRequestUpgrade(...args)
  }

  onResponseStart(...args: Parameters<NewStyleHandler['onResponseStart']>): void {
    this.#inner.onResponseStart(...args)
  }

  onResponseData(...args: Parameters<NewStyleHandler['onResponseData']>): void {
    this.#inner.onResponseData(...args)
  }

  onResponseEnd(...args: Parameters<NewStyleHandler['onResponseEnd']>): void {
    this.#stop?.()
    this.#inner.onResponseEnd(...args)
  }

  onResponseError(...args: Parameters<NewStyleHandler['onResponseError']>): void {
    this.#stop?.()
    this.#inner.onResponseError(...args)
  }
}
