import type { IncomingHttpHeaders } from 'node:http'
import { Agent, request, type Dispatcher } from 'undici'
import type { Instance } from '../../balancer/instance.js'
import type { Logger } from '../../kernel/logger.js'
import { PolicyCounter, type PolicyEvents } from '../policy-events.js'
import type { AttemptWrapper, PolicyExchange, PolicyKind, PolicyRoute, RoutePolicy } from '../policy.js'
import { MirrorSchema, toMirrorConfig, type MirrorConfig, type MirrorSpec } from './schema.js'

const COPIES = new PolicyCounter('portico_mirror_requests_total', 'Copies of requests sent to a route\'s mirror, by route and outcome: answered (any status), failed (no answer in time, or none at all), dropped (too many under way, or the copy of the body fell behind).', 'outcome')

// undici refuses these in a request's headers (it frames the message and owns the connection); Host is the mirror's.
const NOT_COPIED = new Set(['host', 'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'expect'])

interface LiveMirror extends RoutePolicy {
  describe(): { inFlight: number; maxInFlight: number; percent: number }
}

/**
 * `mirror`: a copy of a request, body included, to a shadow service; its answer is read and dropped. An attempt
 * wrapper outside the retry, so a request is copied once, when its first attempt starts: a request a guard refused (a
 * limit, auth, a cache hit) is never copied. Nothing of the copy reaches the client's answer: it is sent beside the
 * attempt, it never waits on the shadow (the body's copy is dropped rather than buffered when the shadow reads
 * slowly), and a copy over `maxInFlight` is dropped, not queued.
 */
export const mirrorPolicy: PolicyKind<MirrorSpec, MirrorConfig, LiveMirror> = {
  key: 'mirror',
  schema: MirrorSchema,
  toConfig: toMirrorConfig,
  create: (route, config, { upstreams, events, logger }) => new RouteMirror(route, config, upstreams(config.source), events, logger),
  services: (config) => (config.source.kind === 'service' ? [config.source.service] : []),
  counters: [COPIES],
  gauges: [{ name: 'portico_mirror_in_flight', help: 'Copies under way to a route\'s mirror.', read: (mirror) => mirror.describe().inFlight }],
}

class RouteMirror implements LiveMirror {
  readonly wrap: AttemptWrapper
  readonly #route: PolicyRoute
  readonly #config: MirrorConfig
  readonly #instances: () => readonly Instance[]
  readonly #events: PolicyEvents
  readonly #logger: Logger
  readonly #agent: Agent
  readonly #timeoutMs: number
  #next = 0
  #inFlight = 0

  constructor(route: PolicyRoute, config: MirrorConfig, instances: () => readonly Instance[], events: PolicyEvents, logger: Logger) {
    this.#route = route
    this.#config = config
    this.#instances = instances
    this.#events = events
    this.#logger = logger
    this.#timeoutMs = config.timeoutMs ?? route.timeout.responseMs
    this.#agent = new Agent({ connections: config.maxInFlight, connectTimeout: route.timeout.connectMs })
    const copy = (ex: PolicyExchange): void => {
      // Whatever goes wrong with a copy stays with the copy.
      try {
        this.#copy(ex)
      } catch (error) {
        this.#logger.warn({ route: route.name, requestId: ex.request.id, err: error }, 'a request could not be mirrored')
        this.#count('failed')
      }
    }
    this.wrap = (next) =>
      function mirror(ex, handler) {
        if (ex.attempt === 1) copy(ex)
        next(ex, handler)
      }
  }

  describe(): { inFlight: number; maxInFlight: number; percent: number } {
    return { inFlight: this.#inFlight, maxInFlight: this.#config.maxInFlight, percent: this.#config.percent }
  }

  stop(): void {
    // Copies are fire-and-forget: those under way are cut (counted as failed) rather than holding a shutdown.
    this.#agent.destroy().catch(noop)
  }

  #copy(ex: PolicyExchange): void {
    const { percent, maxInFlight } = this.#config
    if (percent < 100 && Math.random() * 100 >= percent) return
    const instances = this.#instances()
    if (instances.length === 0) return this.#count('failed')
    if (this.#inFlight >= maxInFlight) return this.#count('dropped')
    const instance = instances[this.#next++ % instances.length] as Instance
    const body = ex.copyBody()
    const headers: IncomingHttpHeaders = { 'x-portico-mirror': this.#route.name }
    for (const [name, value] of Object.entries(ex.forwardedHeaders())) if (!NOT_COPIED.has(name) && value !== undefined) headers[name] = value
    // One deadline for the whole copy, answer's body included.
    const signal = AbortSignal.timeout(this.#timeoutMs)
    const sent = request(`${instance.origin}${ex.upstreamUrl}`, { dispatcher: this.#agent, method: ex.request.method as Dispatcher.HttpMethod, headers, body: body ?? null, signal })
    this.#inFlight++
    sent.then(
      (answer) => {
        answer.body.on('error', noop).resume()
        answer.body.once('close', () => this.#done(body?.dropped === true ? 'dropped' : 'answered'))
      },
      (error: unknown) => {
        const dropped = body?.dropped === true
        if (!dropped) this.#logger.debug({ route: this.#route.name, requestId: ex.request.id, instance: instance.origin, err: error }, 'a mirrored copy failed')
        this.#done(dropped ? 'dropped' : 'failed')
      },
    )
  }

  #done(outcome: 'answered' | 'failed' | 'dropped'): void {
    this.#inFlight--
    this.#count(outcome)
  }

  #count(outcome: 'answered' | 'failed' | 'dropped'): void {
    this.#events.count(COPIES, this.#route.name, outcome)
  }
}

const noop = (): void => undefined
