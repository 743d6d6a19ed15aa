import { GatewayError } from '../../kernel/errors.js'
import type { SharedState } from '../../state/shared-state.js'
import type { PolicyExchange, PolicyKind, RequestGuard } from '../policy.js'
import { ConcurrencyLimitSchema, toConcurrencyLimitConfig, type ConcurrencyLimitConfig, type ConcurrencyLimitSpec } from './schema.js'
import { HostSlots, serveHostSlots } from './host-slots.js'
import { SharedSlots } from './shared-slots.js'

export const concurrencyLimitPolicy: PolicyKind<ConcurrencyLimitSpec, ConcurrencyLimitConfig> = {
  key: 'concurrencyLimit',
  schema: ConcurrencyLimitSchema,
  toConfig: toConcurrencyLimitConfig,
  create: (route, config, { state }) => createConcurrencyLimit(route.name, config, state),
  // Without Redis, the workers of a host take their slots from one count in their primary.
  holdForHost: serveHostSlots,
}

/** Gives one slot back; called exactly once, when the request ends however it ends. */
type Release = () => void

interface Waiter {
  readonly ex: PolicyExchange
  readonly next: (error?: Error) => void
  readonly deadline: number
  done: boolean
}

const QUEUE_POLL_MS = 20

/**
 * A route's concurrency limit: a slot per request from its guard until the request ends (answered, failed, timed
 * out or abandoned; retries keep the one slot). Slots live in Redis when the gateway has one (see SharedSlots), in
 * memory otherwise; while Redis is away, `onRedisDown` decides. Over the limit: 503 concurrency_limited, or a wait in
 * a bounded queue.
 */
function createConcurrencyLimit(route: string, config: ConcurrencyLimitConfig, state: SharedState | undefined) {
  const shared = state && new SharedSlots(state.redis, route, config.limit, state.replicaId)
  // Without Redis, the workers of one host share the limit through their primary.
  const host = !state && HostSlots.available() ? new HostSlots(route, config.limit) : undefined
  let localInUse = 0
  const waiters: Waiter[] = []
  let poller: NodeJS.Timeout | undefined

  const takeLocal = (limit: number): Release | undefined => {
    if (localInUse >= limit) return undefined
    localInUse++
    return once(() => {
      localInUse--
      wake()
    })
  }

  /** Redis is away (or never was): the documented fallback. */
  const takeWithoutRedis = (): Release | undefined => {
    if (!state) return takeLocal(config.limit)
    switch (config.onRedisDown) {
      case 'open':
        return noRelease
      case 'closed':
        throw new GatewayError('state_unavailable', 'Concurrency limits are unavailable while Redis is unreachable')
      case 'local':
        return takeLocal(Math.max(1, Math.floor(config.limit / state.liveReplicas())))
    }
  }

  const take = (): Release | undefined | Promise<Release | undefined> => {
    if (host) {
      return host.take().then(
        (granted): Release | undefined => (granted ? once(() => (host.release(), wake())) : undefined),
        () => takeLocal(config.limit), // the primary did not answer: this worker holds the limit alone
      )
    }
    if (!shared || !state?.isUp()) return takeWithoutRedis()
    return shared.take().then(
      (slot): Release | undefined =>
        slot === undefined
          ? undefined
          : () => {
              shared.release(slot)
              wake()
            },
      () => takeWithoutRedis(),
    )
  }

  const limited = () => new GatewayError('concurrency_limited', `Route "${route}" has ${config.limit} requests in flight, as many as it allows`)

  const admit = (ex: PolicyExchange, next: (error?: Error) => void, release: Release | undefined): void => {
    if (release) {
      ex.onEnd(release)
      return next()
    }
    if (!config.queue || waiters.length >= config.queue.size) return next(limited())
    const waiter: Waiter = { ex, next, deadline: Date.now() + config.queue.timeoutMs, done: false }
    waiters.push(waiter)
    // A client that leaves while waiting leaves the queue.
    ex.onEnd(() => settle(waiter))
    poller ??= setInterval(wake, QUEUE_POLL_MS)
  }

  const settle = (waiter: Waiter, outcome?: { release: Release } | { error: Error }): void => {
    if (waiter.done) return
    waiter.done = true
    waiters.splice(waiters.indexOf(waiter), 1)
    if (waiters.length === 0) {
      clearInterval(poller)
      poller = undefined
    }
    if (!outcome) return
    if ('error' in outcome) return waiter.next(outcome.error)
    waiter.ex.onEnd(outcome.release)
    waiter.next()
  }

  /** Gives the queue's head a slot that came free here (or elsewhere in the fleet); times out who waited too long. */
  let waking = false
  function wake(): void {
    const now = Date.now()
    for (const waiter of [...waiters]) if (waiter.deadline <= now) settle(waiter, { error: limited() })
    const head = waiters[0]
    if (!head || waking) return
    let taken: ReturnType<typeof take>
    try {
      taken = take()
    } catch (error) {
      return settle(head, { error: error as Error })
    }
    const give = (release: Release | undefined) => {
      if (!release) return
      if (head.done) return release() // left meanwhile: the slot goes to the next
      settle(head, { release })
      wake()
    }
    if (!(taken instanceof Promise)) return give(taken)
    waking = true
    taken.then(
      (release) => {
        waking = false
        give(release)
      },
      (error: Error) => {
        waking = false
        settle(head, { error })
      },
    )
  }

  const guard: RequestGuard = function concurrencyLimit(ex, next) {
    let taken: ReturnType<typeof take>
    try {
      taken = take()
    } catch (error) {
      return next(error as Error)
    }
    if (!(taken instanceof Promise)) return admit(ex, next, taken)
    taken.then((release) => admit(ex, next, release), next)
  }

  return {
    guard,
    describe: () => ({ limit: config.limit, inFlightHere: (shared?.held ?? host?.held ?? 0) + localInUse, queued: waiters.length }),
    stop: () => {
      shared?.stop()
      host?.stop()
    },
  }
}

const noRelease: Release = () => undefined

/** A release that acts the first time only. */
function once(release: () => void): Release {
  let released = false
  return () => {
    if (released) return
    released = true
    release()
  }
}
