import { Agent, DecoratorHandler, Dispatcher } from 'undici'

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
  #controller: Dispatcher.DispatchController | undefined
  #abortedWith: Error | undefined

  constructor(connectTimeoutMs: number) {
    this.connectTimeoutMs = connectTimeoutMs
  }

  /** Aborts the upstream request (the client went away, or a deadline passed), now or as soon as it starts. */
  abort(reason: Error): void {
    this.#abortedWith ??= reason
    this.#controller?.abort(reason)
  }

  get aborted(): boolean {
    return this.#abortedWith !== undefined
  }

  attach(controller: Dispatcher.DispatchController): void {
    if (this.#abortedWith) controller.abort(this.#abortedWith)
    else this.#controller = controller
  }

  detach(): void {
    this.#controller = undefined
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
    return agent.dispatch(options, forward ? new Abortable(handler, forward) : handler)
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

/** Hands the request's controller to its ForwardOptions while the request runs; passes everything else through. */
class Abortable implements Dispatcher.DispatchHandler {
  // DecoratorHandler adapts reply-from's callback-style handler to undici's controller-style one.
  readonly #inner: NewStyleHandler
  readonly #forward: ForwardOptions

  constructor(handler: Dispatcher.DispatchHandler, forward: ForwardOptions) {
    this.#inner = new DecoratorHandler(handler) as unknown as NewStyleHandler
    this.#forward = forward
  }

  onRequestStart(controller: Dispatcher.DispatchController, context: object): void {
    this.#inner.onRequestStart(controller, context)
    this.#forward.attach(controller)
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
    this.#forward.detach()
    this.#inner.onResponseEnd(...args)
  }

  onResponseError(...args: Parameters<NewStyleHandler['onResponseError']>): void {
    this.#forward.detach()
    this.#inner.onResponseError(...args)
  }
}
