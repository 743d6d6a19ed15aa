import { parseJsonObject } from '../kernel/json.js'
import type { Logger } from '../kernel/logger.js'
import type { SharedState } from './shared-state.js'

/** What an operator decided, by whom and why, and until when (undefined: until set back). */
export interface OperatorDecision {
  readonly by: string
  readonly reason: string | undefined
  readonly at: number
  readonly until: number | undefined
}

export interface BreakerOverride extends OperatorDecision {
  readonly state: 'open' | 'closed'
}

export interface OverridesSnapshot {
  readonly breakers: Record<string, BreakerOverride>
  /** Route → instance id → the ejection. */
  readonly ejections: Record<string, Record<string, OperatorDecision>>
  /** Consumer → key hash (`*`: every key of the consumer) → the revocation. */
  readonly revocations: Record<string, Record<string, OperatorDecision>>
}

const KEY = 'portico:overrides'
const CHANNEL = 'portico:overrides'
// A replica that missed a message (its subscriber reconnecting after Redis paused) still catches up by the poll:
// at half the promised second, so a poll plus its round trip lands within it (seen: 1 004 ms at a 1 s poll).
const POLL_MS = 500

/** A revocation of every key of a consumer, beside those of single keys. */
const EVERY_KEY = '*'

/**
 * Operator decisions that override the policies (a breaker forced open or closed, an instance taken out of rotation,
 * a consumer's key revoked),
 * fleet-wide: kept in one Redis hash, announced on a channel so every replica rereads it at once, and reread every
 * second in case a message was missed. Without Redis they hold for this process. Reads are map lookups on the request
 * path; expired decisions read as absent.
 */
export class OperatorOverrides {
  readonly #state: SharedState | undefined
  readonly #logger: Logger
  #breakers = new Map<string, BreakerOverride>()
  #ejections = new Map<string, Map<string, OperatorDecision>>()
  #revocations = new Map<string, Map<string, OperatorDecision>>()
  readonly #timer: NodeJS.Timeout | undefined
  readonly #onMessage = (channel: string): void => {
    if (channel === CHANNEL) void this.#reload()
  }

  constructor(options: { state: SharedState | undefined; logger: Logger }) {
    this.#state = options.state
    this.#logger = options.logger
    const state = options.state
    if (state) {
      state.subscriber.on('message', this.#onMessage)
      void state.subscriber.subscribe(CHANNEL).catch(() => undefined)
      this.#timer = setInterval(() => void this.#reload(), POLL_MS)
      this.#timer.unref()
      void this.#reload()
    }
  }

  breaker(route: string): BreakerOverride | undefined {
    const override = this.#breakers.get(route)
    return override && live(override) ? override : undefined
  }

  /** The instances not taken out by an operator (the same array when none of them is). */
  admitted<T extends { readonly id: string }>(route: string, instances: readonly T[]): readonly T[] {
    const ejected = this.#ejections.get(route)
    if (ejected === undefined) return instances
    return instances.some((i) => isOut(ejected, i.id)) ? instances.filter((i) => !isOut(ejected, i.id)) : instances
  }

  /** Whether an operator revoked the consumer (all of its keys), or this key of it. */
  revoked(consumer: string, keyHash?: string): boolean {
    const revoked = this.#revocations.get(consumer)
    return revoked !== undefined && (isOut(revoked, EVERY_KEY) || (keyHash !== undefined && isOut(revoked, keyHash)))
  }

  snapshot(): OverridesSnapshot {
    const breakers: Record<string, BreakerOverride> = {}
    for (const [route, override] of this.#breakers) if (live(override)) breakers[route] = override
    return { breakers, ejections: liveOnly(this.#ejections), revocations: liveOnly(this.#revocations) }
  }

  /** Forces a route's breaker, or (undefined) gives it back to its policy. */
  async setBreaker(route: string, override: BreakerOverride | undefined): Promise<void> {
    await this.#write(`breaker\u0000${route}`, override)
  }

  /** Takes an instance out of rotation (a decision), or puts it back (undefined). */
  async setEjection(route: string, instanceId: string, decision: OperatorDecision | undefined): Promise<void> {
    await this.#write(`eject\u0000${route}\u0000${instanceId}`, decision)
  }

  /** Revokes one key of a consumer (by its hash) or, with `keyHash` undefined, all of them; undefined decision: reinstates. */
  async setRevocation(consumer: string, keyHash: string | undefined, decision: OperatorDecision | undefined): Promise<void> {
    await this.#write(`revoke\u0000${consumer}\u0000${keyHash ?? EVERY_KEY}`, decision)
  }

  stop(): void {
    clearInterval(this.#timer)
    this.#state?.subscriber.off('message', this.#onMessage)
  }

  /** Writes one decision, fleet-wide when there is Redis (an error when it is unreachable), here otherwise. */
  async #write(field: string, value: OperatorDecision | undefined): Promise<void> {
    const state = this.#state
    if (!state) {
      const entries = this.#entries()
      if (value === undefined) entries.delete(field)
      else entries.set(field, value)
      this.#apply(entries)
      return
    }
    const multi = state.redis.multi()
    if (value === undefined) multi.hdel(KEY, field)
    else multi.hset(KEY, field, JSON.stringify(value))
    const results = await multi.publish(CHANNEL, field).exec()
    const failed = results?.find(([error]) => error)?.[0]
    if (!results || failed) throw failed ?? new Error('Redis did not run the change')
    await this.#reload()
  }

  async #reload(): Promise<void> {
    const state = this.#state
    if (!state?.isUp()) return // keep what was last read: decisions hold while Redis is away
    let raw: Record<string, string>
    try {
      raw = await state.redis.hgetall(KEY)
    } catch {
      return
    }
    const entries = new Map<string, OperatorDecision>()
    const expired: string[] = []
    for (const [field, text] of Object.entries(raw)) {
      const decision = parseDecision(text)
      if (!decision) {
        this.#logger.warn({ field: field.replaceAll('\u0000', '/'), value: text.slice(0, 200) }, 'dropped an unreadable operator override')
        expired.push(field)
      } else if (live(decision)) entries.set(field, decision)
      else expired.push(field)
    }
    if (expired.length > 0) void state.redis.hdel(KEY, ...expired).catch(() => undefined)
    this.#apply(entries)
  }

  #entries(): Map<string, OperatorDecision> {
    const entries = new Map<string, OperatorDecision>()
    for (const [route, override] of this.#breakers) entries.set(`breaker\u0000${route}`, override)
    for (const [route, instances] of this.#ejections) for (const [id, decision] of instances) entries.set(`eject\u0000${route}\u0000${id}`, decision)
    for (const [consumer, keys] of this.#revocations) for (const [hash, decision] of keys) entries.set(`revoke\u0000${consumer}\u0000${hash}`, decision)
    return entries
  }

  #apply(entries: Map<string, OperatorDecision>): void {
    const breakers = new Map<string, BreakerOverride>()
    const ejections = new Map<string, Map<string, OperatorDecision>>()
    const revocations = new Map<string, Map<string, OperatorDecision>>()
    for (const [field, decision] of entries) {
      const [kind, owner = '', id = ''] = field.split('\u0000')
      if (kind === 'breaker' && 'state' in decision) breakers.set(owner, decision as BreakerOverride)
      else if (kind === 'eject') nested(ejections, owner).set(id, decision)
      else if (kind === 'revoke') nested(revocations, owner).set(id, decision)
    }
    this.#breakers = breakers
    this.#ejections = ejections
    this.#revocations = revocations
  }
}

const live = (decision: OperatorDecision): boolean => decision.until === undefined || decision.until > Date.now()
const isOut = (ejected: ReadonlyMap<string, OperatorDecision>, id: string): boolean => {
  const decision = ejected.get(id)
  return decision !== undefined && live(decision)
}

function nested(map: Map<string, Map<string, OperatorDecision>>, owner: string): Map<string, OperatorDecision> {
  let inner = map.get(owner)
  if (!inner) map.set(owner, (inner = new Map()))
  return inner
}

function liveOnly(map: ReadonlyMap<string, ReadonlyMap<string, OperatorDecision>>): Record<string, Record<string, OperatorDecision>> {
  const out: Record<string, Record<string, OperatorDecision>> = {}
  for (const [owner, decisions] of map) for (const [id, decision] of decisions) if (live(decision)) (out[owner] ??= {})[id] = decision
  return out
}

/** A decision as another replica (or anything else) wrote it: checked field by field, junk refused. */
function parseDecision(text: string): OperatorDecision | undefined {
  const value = parseJsonObject(text)
  if (!value) return undefined
  const { by, reason, at, until, state } = value
  if (typeof by !== 'string' || typeof at !== 'number' || (until !== undefined && typeof until !== 'number') || (reason !== undefined && typeof reason !== 'string')) return undefined
  if (state !== undefined && state !== 'open' && state !== 'closed') return undefined
  return { by, reason, at, until, ...(state === undefined ? {} : { state }) } as OperatorDecision
}
