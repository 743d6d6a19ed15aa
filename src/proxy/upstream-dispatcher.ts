import type { IncomingHttpHeaders } from 'node:http'
import { Readable } from 'node:stream'
import { Agent, Dispatcher } from 'undici'
import type { BodySink, UpstreamBody } from '../policies/policy.js'

/**
 * reply-from sends every request through one dispatcher and takes no per-request options beyond a response timeout.
 * What a route adds (its connect timeout, and aborting when the client goes away) travels with the request headers
 * under this symbol key: undici only reads string keys, so it never reaches the upstream.
 */
export const kAttemptSignal = Symbol('portico.attemptSignal')

/**
 * One forward attempt's link to its upstream request: aborting it cancels the request, now or as soon as it gets a
 * connection. Two fields, where an AbortController's EventTarget cost more per request than the whole routing step.
 */
export class AttemptSignal {
  readonly connectTimeoutMs: number
  aborted = false
  reason: Error | undefined
  #answer: UpstreamAnswer | undefined

  constructor(connectTimeoutMs: number) {
    this.connectTimeoutMs = connectTimeoutMs
  }

  /** Aborts the upstream request (the client went away, the attempt timed out). */
  abort(reason: Error): void {
    if (this.aborted) return
    this.aborted = true
    this.reason = reason
    this.#answer?.abort(reason)
  }

  link(answer: UpstreamAnswer): void {
    this.#answer = answer
  }
}

/** What reply-from hands its request callback: the answer's head, and its body still arriving. */
interface AnswerHead {
  readonly statusCode: number
  readonly headers: IncomingHttpHeaders
  readonly body: UpstreamBody
}
type RequestCallback = (error: Error | null, answer?: AnswerHead) => void

const GIVEN_UP = Object.assign(new Error('the gateway gave up the upstream answer\'s body'), { code: 'UND_ERR_ABORTED' })

/**
 * One upstream request, as undici's dispatch handler and as the answer's body. It replaces undici's `request()`
 * (a RequestHandler, an AsyncResource scope and a BodyReadable per request): chunks go straight from the parser to
 * the body's sink, and pausing the sink pauses the connection. reply-from still builds the request and reads the
 * answer's head; only what carries the bytes is Portico's.
 */
class UpstreamAnswer implements Dispatcher.DispatchHandler, UpstreamBody {
  #callback: RequestCallback | undefined
  readonly #signal: AttemptSignal | undefined
  #controller: Dispatcher.DispatchController | undefined = undefined
  #sink: BodySink | undefined = undefined
  /** Chunks that arrived before a sink, or while it was paused: handed over in order. */
  #held: Buffer[] | undefined = undefined
  #paused = false
  /** The body's outcome while it waits to be told: true for its end, the error for a failure. */
  #outcome: true | Error | undefined = undefined
  #done = false
  /** The request's body while it may still be sent: given up if the request fails. */
  #requestBody: unknown

  constructor(callback: RequestCallback, signal: AttemptSignal | undefined, requestBody: unknown) {
    this.#callback = callback
    this.#signal = signal
    this.#requestBody = requestBody
    signal?.link(this)
  }

  /** Cancels the request: its callback, or the body's sink, hears `reason`. */
  abort(reason: Error): void {
    this.#controller?.abort(reason)
  }

  // Called again when undici retries a pipelined request on another connection: the newest controller is the one.
  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller
    const signal = this.#signal
    if (signal?.aborted) controller.abort(signal.reason as Error)
  }

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    // 1xx (102, 103) are not the answer; a 100 and a 101 never get here (undici and the tunnel own them).
    if (statusCode < 200) return
    const callback = this.#callback as RequestCallback
    this.#callback = undefined
    this.#requestBody = undefined
    try {
      callback(null, { statusCode, headers, body: this })
    } catch (error) {
      // A bug in the gateway, not the upstream's doing: undici's request() lets it through the same way.
      this.destroy()
      queueMicrotask(() => {
        throw error
      })
    }
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#done) return
    if (this.#sink !== undefined && this.#held === undefined && !this.#paused) return this.#sink.data(chunk)
    ;(this.#held ??= []).push(chunk)
    controller.pause()
  }

  onResponseEnd(): void {
    this.#finish(true)
  }

  onResponseError(_controller: Dispatcher.DispatchController | undefined, error: Error): void {
    // As undici's request() does: the body sent is given up, and the failure is told after what undici has queued.
    const sent = this.#requestBody
    this.#requestBody = undefined
    if (sent instanceof Readable) sent.on('error', noop).destroy(error)
    const callback = this.#callback
    this.#callback = undefined
    queueMicrotask(() => (callback === undefined ? this.#finish(error) : callback(error)))
  }

  pipeTo(sink: BodySink): void {
    this.#sink = sink
    this.#handOver()
  }

  pause(): void {
    this.#paused = true
    this.#controller?.pause()
  }

  resume(): void {
    this.#paused = false
    // Without a sink yet there is nowhere to hand anything: it all waits for `pipeTo`.
    if (this.#sink !== undefined) this.#handOver()
  }

  destroy(): void {
    if (this.#done) return
    this.#done = true
    this.#held = undefined
    this.#controller?.abort(GIVEN_UP)
  }

  /** The body ended or broke: its end waits behind held chunks and a pause; a failure is told at once, as a stream's. */
  #finish(outcome: true | Error): void {
    if (this.#done) return
    const sink = this.#sink
    if (sink === undefined || (outcome === true && (this.#held !== undefined || this.#paused))) return void (this.#outcome = outcome)
    this.#done = true
    this.#held = undefined
    this.#outcome = undefined
    if (outcome === true) sink.end()
    else sink.error(outcome)
  }

  /** What waited for a sink (or for the sink to resume) goes to it, until it pauses again; then the outcome, if one came. */
  #handOver(): void {
    const sink = this.#sink as BodySink
    const held = this.#held
    if (held !== undefined) {
      while (held.length > 0 && !this.#paused && !this.#done) sink.data(held.shift() as Buffer)
      if (held.length === 0) this.#held = undefined
    }
    if (this.#done) return
    const outcome = this.#outcome
    if (outcome !== undefined) return this.#finish(outcome)
    if (!this.#paused) this.#controller?.resume()
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
    return this.#agentFor(signalOf(options)?.connectTimeoutMs ?? 5_000).dispatch(options, handler)
  }

  /**
   * What reply-from sends through (it takes any object with `request(options, callback)`): the answer comes back with
   * an UpstreamBody where undici's `request()` gives a Readable, which reply-from only hands on.
   */
  readonly requestable = {
    request: (options: Dispatcher.DispatchOptions, callback: RequestCallback): void => {
      this.dispatch(options, new UpstreamAnswer(callback, signalOf(options), options.body))
    },
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

/** The attempt's signal, carried with the request's headers (see kAttemptSignal). */
function signalOf(options: Dispatcher.DispatchOptions): AttemptSignal | undefined {
  return (options.headers as Record<symbol, AttemptSignal | undefined> | undefined)?.[kAttemptSignal]
}

const noop = (): void => undefined
