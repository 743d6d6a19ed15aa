import CircuitBreaker from 'opossum'
import type { FastifyBaseLogger } from 'fastify'
import { GatewayError } from '../../errors.js'
import type { SharedState } from '../../state/shared-state.js'
import type { CircuitBreakerConfig } from './schema.js'

const CHANNEL = 'portico:breakers'
// The fleet's single probe: only once the fleet-wide open period is over, and only one replica at a time.
const TAKE_PROBE = `if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2], 'NX') then return 1 end
return 0`
const BUCKETS = 10

interface BreakerMessage {
  readonly route: string
  readonly event: 'open' | 'close'
  readonly until?: number
  readonly from: string
}

const COUNTED = new Error('the request counts as a failure')

/** A failed attempt the breaker should count, carrying what the caller still needs (e.g. the upstream response). */
export class CountedFailure<T> extends Error {
  constructor(readonly outcome: T) {
    super('the attempt counts as a failure')
  }
}

export interface RouteBreaker {
  /**
   * Runs one upstream attempt through the breaker. Throws 503 circuit_open without running it while the breaker is
   * open, or while it is half-open and another replica holds the fleet's single probe.
   */
  run<T>(attempt: () => Promise<T>): Promise<T>
  /**
   * For a request that goes ahead while the breaker is closed: the function to call once with how it went, so the
   * breaker counts it without standing in the response's way. Undefined when the breaker is not closed (use `run`).
   */
  observe(): ((failed: boolean) => void) | undefined
  state(): { state: 'closed' | 'open' | 'half-open'; openUntil: number | undefined }
  stop(): void
}

/**
 * opossum's breaker per route and replica, with its counts and state shared through Redis. Opossum keeps no
 * cross-process state (its maintainers declined it, opossum#675), so this module adds it:
 * - each replica adds its successes and failures to time-bucketed Redis hashes, off the request path (every flush);
 * - any replica that sees the fleet's numbers cross the threshold opens the breaker everywhere: a state key with a TTL
 *   of resetTimeout (for replicas that start later) and a pub/sub message (for the ones running);
 * - in half-open, a Redis lock lets exactly one probe through across the fleet; its success closes every replica,
 *   its failure re-opens every replica;
 * - without Redis every replica keeps working on its own opossum state and resyncs when Redis returns.
 */
export function createRouteBreaker(route: string, config: CircuitBreakerConfig, state: SharedState | undefined, logger: FastifyBaseLogger): RouteBreaker {
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
    bucket: (start: number) => `portico:cb:{${route}}:counts:${start}`,
  }
  const bucketMs = Math.max(100, Math.floor(config.windowMs / BUCKETS))
  let openUntil: number | undefined
  let applyingRemote = false
  let pending = { successes: 0, failures: 0 }

  breaker.on('success', () => pending.successes++)
  breaker.on('failure', () => pending.failures++)
  breaker.on('open', () => {
    openUntil = Date.now() + config.resetTimeoutMs
    if (!applyingRemote) void announceOpen()
    logger.warn({ route, openUntil: new Date(openUntil).toISOString(), remote: applyingRemote }, 'circuit breaker open')
  })
  breaker.on('close', () => {
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
    if (!state?.isUp()) return
    const until = openUntil ?? Date.now() + config.resetTimeoutMs
    try {
      await state.redis
        .multi()
        .set(keys.state, String(until), 'PX', Math.max(1, until - Date.now()))
        .del(keys.probe)
        .publish(CHANNEL, JSON.stringify({ route, event: 'open', until, from: state.replicaId } satisfies BreakerMessage))
        .exec()
    } catch {
      // Redis went away: the other replicas decide on their own until it is back.
    }
  }

  async function announceClose(): Promise<void> {
    if (!state?.isUp()) return
    try {
      const now = Date.now()
      const buckets = Array.from({ length: BUCKETS + 1 }, (_, i) => keys.bucket(Math.floor(now / bucketMs) * bucketMs - i * bucketMs))
      await state.redis
        .multi()
        .del(keys.state, keys.probe, ...buckets)
        .publish(CHANNEL, JSON.stringify({ route, event: 'close', from: state.replicaId } satisfies BreakerMessage))
        .exec()
    } catch {
      // as above
    }
  }

  /** Adds this replica's counts to the fleet's, then acts on the fleet's numbers and state. */
  async function flush(): Promise<void> {
    if (!state?.isUp()) return
    const counts = pending
    pending = { successes: 0, failures: 0 }
    const now = Date.now()
    const current = Math.floor(now / bucketMs) * bucketMs
    const window = Array.from({ length: BUCKETS }, (_, i) => keys.bucket(current - i * bucketMs))
    try {
      const multi = state.redis.multi()
      if (counts.successes + counts.failures > 0) {
        multi.hincrby(keys.bucket(current), 's', counts.successes).hincrby(keys.bucket(current), 'f', counts.failures).pexpire(keys.bucket(current), config.windowMs * 2)
      }
      for (const key of window) multi.hmget(key, 's', 'f')
      multi.pttl(keys.state)
      const results = (await multi.exec()) ?? []
      const stateTtl = Number(results.at(-1)?.[1] ?? -2)
      let successes = 0
      let failures = 0
      for (const [, value] of results.slice(results.length - 1 - BUCKETS, -1)) {
        const [s, f] = value as [string | null, string | null]
        successes += Number(s ?? 0)
        failures += Number(f ?? 0)
      }
      const volume = successes + failures
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
    } catch {
      // Counts of this flush are lost while Redis is away; the local breaker still sees every request.
    }
  }

  const onMessage = (channel: string, text: string) => {
    if (channel !== CHANNEL) return
    const message = JSON.parse(text) as BreakerMessage
    if (message.route !== route || message.from === state?.replicaId) return
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
  if (state) {
    state.subscriber.on('message', onMessage)
    void state.subscriber.subscribe(CHANNEL).catch(() => undefined)
  }
  const timer = setInterval(() => void flush(), Math.min(200, bucketMs))
  timer.unref()

  const circuitOpen = () => {
    const remainingMs = Math.max(0, (openUntil ?? Date.now()) - Date.now())
    return new GatewayError('circuit_open', `The breaker of route "${route}" is open; the upstream is not called`, {
      headers: { 'retry-after': String(Math.max(1, Math.ceil(remainingMs / 1000))) },
    })
  }

  // opossum refuses a call itself while half-open with its one trial call under way.
  const openAsCircuitOpen = (error: unknown): never => {
    throw (error as { code?: string }).code === 'EOPENBREAKER' ? circuitOpen() : error
  }
  async function probe<T>(attempt: () => Promise<T>): Promise<T> {
    const taken = await state?.redis.eval(TAKE_PROBE, 2, keys.state, keys.probe, state.replicaId, Math.max(1_000, config.resetTimeoutMs)).catch(() => 1)
    if (taken !== 1) throw circuitOpen()
    return (await breaker.fire(attempt).catch(openAsCircuitOpen)) as T
  }

  return {
    run(attempt) {
      if (breaker.opened) return Promise.reject(circuitOpen())
      if (breaker.halfOpen && state?.isUp()) return probe(attempt)
      return breaker.fire(attempt).catch(openAsCircuitOpen) as ReturnType<typeof attempt>
    },
    observe() {
      if (!breaker.closed) return undefined
      let end: ((failed: boolean) => void) | undefined
      // opossum runs the action at once, so `end` is set when fire returns.
      breaker
        .fire(() =>
          new Promise<void>((resolve, reject) => {
            end = (failed) => (failed ? reject(COUNTED) : resolve())
          }),
        )
        .catch(() => undefined) // counted by opossum; nothing waits for it
      return end
    },
    state: () => ({ state: breaker.opened ? 'open' : breaker.halfOpen ? 'half-open' : 'closed', openUntil }),
    stop() {
      clearInterval(timer)
      state?.subscriber.off('message', onMessage)
      breaker.shutdown()
    },
  }
}
