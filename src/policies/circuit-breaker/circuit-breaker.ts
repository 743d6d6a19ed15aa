import CircuitBreaker from 'opossum'
import { GatewayError } from '../../kernel/errors.js'
import { hostChannel } from '../../kernel/host-channel.js'
import { parseJsonObject } from '../../kernel/json.js'
import type { Logger } from '../../kernel/logger.js'
import { isClientFault } from '../../kernel/upstream-errors.js'
import { FleetCounters } from '../../state/fleet-counters.js'
import type { BreakerOverride, OperatorOverrides } from '../../state/operator-overrides.js'
import type { SharedState } from '../../state/shared-state.js'
import { PolicyCounter, type PolicyEvents } from '../policy-events.js'
import { RequestValue, type AttemptHandler, type AttemptWrapper, type PolicyExchange, type PolicyKind, type PolicyRoute, type RoutePolicy, type Send, type StatusCell, type UpstreamResponse } from '../policy.js'
import { CircuitBreakerSchema, toCircuitBreakerConfig, type CircuitBreakerConfig, type CircuitBreakerSpec } from './schema.js'

const CHANNEL = 'portico:breakers'
/** Version of the pub/sub message format. Messages without `v` are version 1 (replicas before it was written). */
const MESSAGE_VERSION = 1
// The fleet's single probe: only once the fleet-wide open period is over, and only one replica at a time.
const TAKE_PROBE = `if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2], 'NX') then return 1 end
return 0`
const BUCKETS = 10

interface BreakerMessage {
  readonly v: typeof MESSAGE_VERSION
  readonly route: string
  readonly event: 'open' | 'close'
  readonly until?: number | undefined
  readonly from: string
}

/**
 * A breaker message as another replica (or anything else with access to the channel) published it; undefined for
 * whatever is not a message of a version this replica reads. Never throws: the channel is input like any other.
 */
function parseBreakerMessage(text: string): BreakerMessage | undefined {
  const value = parseJsonObject(text)
  if (!value) return undefined
  const { v = MESSAGE_VERSION, route, event, until, from } = value
  if (v !== MESSAGE_VERSION || typeof route !== 'string' || typeof from !== 'string' || (event !== 'open' && event !== 'close')) return undefined
  if (until !== undefined && (typeof until !== 'number' || !Number.isFinite(until))) return undefined
  return { v: MESSAGE_VERSION, route, event, until, from }
}

const COUNTED = new Error('the request counts as a failure')

/** The breaker's state as the request's last attempt found it, on the request's span. */
export const BREAKER_STATE = new RequestValue<'closed' | 'open' | 'half-open'>('circuitBreaker.state', { spanAttribute: 'portico.circuit_breaker.state' })

const TRANSITIONS = new PolicyCounter('portico_circuit_breaker_transitions_total', 'Breaker transitions by route and the state entered (open, half_open, closed).', 'to')
const STATE_NUMBER = { closed: 0, 'half-open': 1, open: 2 } as const
const TONE = { closed: 'good', 'half-open': 'warn', open: 'bad' } as const

type BreakerView = ReturnType<RouteBreaker['state']>

interface LiveBreaker extends RoutePolicy {
  describe(): BreakerView
}

/** The breaker's cell: its state, or on a route without one the state an operator forced on it (refused before any policy). */
function breakerCell(view: Pick<BreakerView, 'state' | 'forced'>): StatusCell {
  const { state, forced } = view
  return { mark: state, text: state, tone: TONE[state], ...(forced ? { note: `forced by ${forced.by}${forced.reason ? `: ${forced.reason}` : ''}` } : {}) }
}

export const circuitBreakerPolicy: PolicyKind<CircuitBreakerSpec, CircuitBreakerConfig, LiveBreaker> = {
  key: 'circuitBreaker',
  schema: CircuitBreakerSchema,
  toConfig: toCircuitBreakerConfig,
  create: (route, config, { state, logger, events, overrides }) => {
    const breaker = createRouteBreaker(route, config, state, logger, events, overrides)
    return { wrap: breaker.wrap, describe: breaker.state, refusesAll: () => breaker.state().state === 'open', stop: breaker.stop }
  },
  perTarget: true,
  counters: [TRANSITIONS],
  charts: [{ counter: TRANSITIONS, title: 'Breaker', as: 'marks', series: (to) => to }],
  gauges: [{ name: 'portico_circuit_breaker_state', aggregator: 'max', help: 'Breaker state per route: 0 closed, 1 half-open, 2 open.', read: (breaker) => STATE_NUMBER[breaker.describe().state] }],
  column: {
    title: 'Breaker',
    attribute: 'breaker',
    cell: (breaker, route, { overrides }) => {
      const forced = overrides.breaker(route)
      return breaker ? breakerCell(breaker.describe()) : forced && breakerCell({ state: forced.state, forced })
    },
  },
}

interface RouteBreaker {
  /**
   * The breaker around a route's attempts: an attempt goes ahead while the breaker is closed (counted from its
   * handler, never held up), is refused with 503 circuit_open while it is open, or while it is half-open and another
   * replica (or request) holds the fleet's single probe.
   */
  readonly wrap: AttemptWrapper
  /** The state requests see, an operator's forced one included (with who forced it, why, and until when). */
  readonly state: () => { state: 'closed' | 'open' | 'half-open'; openUntil: number | undefined; forced?: BreakerOverride }
  readonly stop: () => void
}

/** Tells the breaker how an attempt went, passing the outcome on unchanged. */
class CountedAttempt implements AttemptHandler {
  constructor(
    readonly record: (failed: boolean) => void,
    readonly failureStatuses: ReadonlySet<number>,
    readonly downstream: AttemptHandler,
  ) {}

  onResponse(ex: PolicyExchange, res: UpstreamResponse): void {
    this.record(this.failureStatuses.has(res.statusCode))
    this.downstream.onResponse(ex, res)
  }

  onError(ex: PolicyExchange, error: Error): void {
    // A client that went away, or sent too much, says nothing about the upstream.
    this.record(!isClientFault(error))
    this.downstream.onError(ex, error)
  }
}

/**
 * opossum's breaker per route and replica, with its counts and state shared through Redis. Opossum keeps no
 * cross-process state (its maintainers declined it, opossum#675), so this module adds it:
 * - each replica adds its successes and failures to the fleet's counters (FleetCounters), off the request path;
 * - any replica that sees the fleet's numbers cross the threshold opens the breaker everywhere: a state key with a TTL
 *   of resetTimeout (for replicas that start later) and a pub/sub message (for the ones running);
 * - in half-open, a Redis lock lets exactly one probe through across the fleet; its success closes every replica,
 *   its failure re-opens every replica;
 * - without Redis every replica keeps working on its own opossum state and resyncs when Redis returns.
 */
function createRouteBreaker({ name: route, timeout }: PolicyRoute, config: CircuitBreakerConfig, state: SharedState | undefined, logger: Logger, events: PolicyEvents, overrides: OperatorOverrides): RouteBreaker {
  const breaker = new CircuitBreaker((attempt: () => Promise<unknown>) => attempt(), {
    timeout: false, // the forward call has its own timeouts
    errorThresholdPercentage: config.errorThresholdPercentage,
    volumeThreshold: config.volumeThreshold,
    resetTimeout: config.resetTimeoutMs,
    rollingCountTimeout: config.windowMs,
    rollingCountBuckets: BUCKETS,
    // Neither is read here; with them on, opossum keeps every latency of the window and sorts them all each second.
    rollingPercentilesEnabled: false,
    enableSnapshots: false,
  })
  const keys = {
    state: `portico:cb:{${route}}:open`,
    probe: `portico:cb:{${route}}:probe`,
  }
  let openUntil: number | undefined
  let applyingRemote = false
  // Who sent a message: the replica, or without Redis the worker process (its peers are the host's other workers).
  const self = state?.replicaId ?? `pid:${process.pid}`
  // The fleet's counts, with the state key read in the same round trip: what the fleet decides on.
  const counts = new FleetCounters({
    state,
    key: `portico:cb:{${route}}:counts`,
    fields: ['s', 'f'],
    windowMs: config.windowMs,
    buckets: BUCKETS,
    alongside: { add: (multi) => multi.pttl(keys.state), read: ([ttl]) => actOnFleet(Number(ttl ?? -2)) },
  })

  breaker.on('success', () => counts.add('s'))
  breaker.on('failure', () => counts.add('f'))
  breaker.on('open', () => {
    events.count(TRANSITIONS, route, 'open')
    openUntil = Date.now() + config.resetTimeoutMs
    if (!applyingRemote) void announceOpen()
    logger.warn({ route, openUntil: new Date(openUntil).toISOString(), remote: applyingRemote }, 'circuit breaker open')
  })
  breaker.on('halfOpen', () => events.count(TRANSITIONS, route, 'half_open'))
  breaker.on('close', () => {
    events.count(TRANSITIONS, route, 'closed')
    openUntil = undefined
    if (!applyingRemote) void announceClose()
    logger.info({ route, remote: applyingRemote }, 'circuit breaker closed')
  })

  const remotely = (change: () => void) => {
    applyingRemote = true
    try {
      change()
    } finally {
      applyingRemote = false
    }
  }

  async function announceOpen(): Promise<void> {
    const until = openUntil ?? Date.now() + config.resetTimeoutMs
    if (!state) return hostChannel.publish(CHANNEL, JSON.stringify({ v: MESSAGE_VERSION, route, event: 'open', until, from: self } satisfies BreakerMessage))
    if (!state.isUp()) return
    try {
      await state.redis
        .multi()
        .set(keys.state, String(until), 'PX', Math.max(1, until - Date.now()))
        .del(keys.probe)
        .publish(CHANNEL, JSON.stringify({ v: MESSAGE_VERSION, route, event: 'open', until, from: state.replicaId } satisfies BreakerMessage))
        .exec()
    } catch {
      // Redis went away: the other replicas decide on their own until it is back.
    }
  }

  async function announceClose(): Promise<void> {
    if (!state) return hostChannel.publish(CHANNEL, JSON.stringify({ v: MESSAGE_VERSION, route, event: 'close', from: self } satisfies BreakerMessage))
    if (!state.isUp()) return
    try {
      await state.redis
        .multi()
        .del(keys.state, keys.probe, ...counts.windowKeys())
        .publish(CHANNEL, JSON.stringify({ v: MESSAGE_VERSION, route, event: 'close', from: state.replicaId } satisfies BreakerMessage))
        .exec()
    } catch {
      // as above
    }
  }

  /** Acts on the fleet's numbers and state, as read at the counters' last flush. */
  async function actOnFleet(stateTtl: number): Promise<void> {
    const failures = counts.sum('f')
    const volume = counts.sum('s') + failures
    if (stateTtl > 0 && breaker.closed) {
      // Opened elsewhere (we missed the message, or started later).
      remotely(() => breaker.open())
      openUntil = Date.now() + stateTtl
    } else if (stateTtl < 0 && breaker.opened && (openUntil ?? 0) - Date.now() > 100) {
      // Opened here while Redis was away: tell the fleet now that it is back.
      await announceOpen()
    } else if (breaker.closed && volume >= config.volumeThreshold && (failures * 100) / volume >= config.errorThresholdPercentage) {
      breaker.open() // announces itself
    }
  }

  let unreadableLoggedAt = 0
  const onMessage = (channel: string, text: string) => {
    if (channel !== CHANNEL) return
    const message = parseBreakerMessage(text)
    if (!message) {
      // Dropped; logged at most once a minute per route, so a flood of junk cannot flood the log either.
      if (Date.now() - unreadableLoggedAt > 60_000) {
        unreadableLoggedAt = Date.now()
        logger.warn({ route, channel, message: text.slice(0, 200) }, 'dropped an unreadable breaker message (unknown format or version)')
      }
      return
    }
    if (message.route !== route || message.from === self) return
    if (message.event === 'open') {
      // Already open here: start the reset timer over, so no replica probes before the fleet's open period ends.
      remotely(() => {
        if (breaker.opened) breaker.close()
        breaker.open()
      })
      openUntil = message.until
    } else {
      remotely(() => breaker.close())
    }
  }
  // With Redis, the fleet's channel; without it, the host's (other workers of `--workers`, if any).
  const leaveHost = state ? undefined : hostChannel.subscribe(onMessage)
  if (state) {
    state.subscriber.on('message', onMessage)
    void state.subscriber.subscribe(CHANNEL).catch(() => undefined)
  }

  const circuitOpen = () => {
    const remainingMs = Math.max(0, (openUntil ?? Date.now()) - Date.now())
    return new GatewayError('circuit_open', `The breaker of route "${route}" is open; the upstream is not called`, {
      headers: { 'retry-after': String(Math.max(1, Math.ceil(remainingMs / 1000))) },
    })
  }

  /**
   * Admits one attempt: the function to call once with how it went, or undefined when opossum refuses it (open, or
   * half-open with its one trial under way). opossum runs the action at once, so `end` is set when fire returns.
   */
  const admit = (): ((failed: boolean) => void) | undefined => {
    let end: ((failed: boolean) => void) | undefined
    breaker
      .fire(() =>
        new Promise<void>((resolve, reject) => {
          end = (failed) => (failed ? reject(COUNTED) : resolve())
        }),
      )
      .catch(() => undefined) // counted by opossum; nothing waits for it
    return end
  }
  // The probe can last no longer than its timeouts: a replica that dies holding the lock holds up the fleet no longer.
  const probeLockMs = Math.max(1_000, timeout.connectMs + timeout.responseMs)

  const wrap: AttemptWrapper = (next: Send): Send => {
    const send = (ex: PolicyExchange, handler: AttemptHandler) => {
      const record = admit()
      if (!record) return handler.onError(ex, circuitOpen())
      next(ex, new CountedAttempt(record, config.failureStatuses, handler))
    }
    return function circuitBreaker(ex, handler) {
      // A request that started before a reload replaced this breaker finishes without it; one under an operator's
      // "closed" goes through uncounted (forced open is refused before any policy, for every route).
      if (breaker.isShutdown) return next(ex, handler)
      const forcedClosed = overrides.breaker(route)?.state === 'closed'
      ex.set(BREAKER_STATE, forcedClosed || !(breaker.opened || breaker.halfOpen) ? 'closed' : breaker.opened ? 'open' : 'half-open')
      if (forcedClosed) return next(ex, handler)
      if (breaker.opened) return handler.onError(ex, circuitOpen())
      if (breaker.halfOpen && state?.isUp()) {
        state.redis.eval(TAKE_PROBE, 2, keys.state, keys.probe, state.replicaId, probeLockMs).then(
          (taken) => (taken === 1 ? send(ex, handler) : handler.onError(ex, circuitOpen())),
          () => send(ex, handler), // Redis went away: this replica decides alone
        )
        return
      }
      send(ex, handler)
    }
  }

  return {
    wrap,
    state: () => {
      const forced = overrides.breaker(route)
      const own = breaker.opened ? 'open' : breaker.halfOpen ? 'half-open' : 'closed'
      return { state: forced?.state ?? own, openUntil: forced ? forced.until : openUntil, ...(forced ? { forced } : {}) }
    },
    stop() {
      counts.stop()
      state?.subscriber.off('message', onMessage)
      leaveHost?.()
      breaker.shutdown()
    },
  }
}
