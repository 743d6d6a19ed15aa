import { hostChannel } from '../kernel/host-channel.js'
import { parseJsonObject } from '../kernel/json.js'
import type { SharedState } from './shared-state.js'

/** One route's counts in one slot of the traffic history: what a replica publishes, and what the fleet's are the sum of. */
export interface SlotCounts {
  /** Requests, 4xx, 5xx, then the duration buckets' counts (non-cumulative; the last past the largest bound). */
  readonly fields: number[]
  /** Answers the gateway gave itself, by problem code. */
  readonly codes: Record<string, number>
  /** Charted policy counters: chart title → series → count. */
  readonly charts: Record<string, Record<string, number>>
}

/** Every route's counts in one slot, by route (only routes that had any). */
export type Slot = Map<string, SlotCounts>

/** Where the replicas' slots meet: each publishes its own, and reads the others'. */
export interface FleetHistory {
  /** The others' slots come to this replica whether it reads them or not: reading costs nothing, so every slot is summed. */
  readonly pushed: boolean
  publish(start: number, slot: Slot): Promise<void>
  /**
   * The other replicas' slots at those of these starts it can tell; undefined while the fleet cannot be read (Redis
   * away).
   */
  read(starts: readonly number[]): Promise<Map<number, Slot[]> | undefined>
  stop(): void
}

export interface FleetHistoryOptions {
  readonly state: SharedState
  readonly slotMs: number
  readonly slots: number
  /** How many fixed fields a slot has. */
  readonly fields: number
  /** The routes whose counts are taken from others: a peer's names for anything else are not kept. */
  readonly knownRoute: (route: string) => boolean
  readonly chartTitles: ReadonlySet<string>
}

// One hash tag for all of the history: a slot's hash is one key, read with its neighbours in one pipeline.
const KEY_PREFIX = 'portico:{history}:slot:'
const FORMAT = 1
const CODE = /^[a-z][a-z0-9_]{0,63}$/
const MAX_SERIES = 64
const MAX_SERIES_NAME = 130
// Far above a 5 s slot's count on any replica: anything larger is not a count.
const MAX_COUNT = 1e9

/**
 * The fleet's traffic history in Redis: a hash per 5 s slot, a field per replica holding that replica's counts of the
 * slot as JSON, kept a little longer than the history's window. A replica writes one field per slot and reads the
 * slots it is asked for, off the request path. What it reads is a peer's text: checked field by field, and a replica's
 * slot that is not Portico's is dropped whole (and reported as junk), never half-added.
 */
export function createFleetHistory(options: FleetHistoryOptions): FleetHistory {
  const { state } = options
  const keyOf = (start: number) => `${KEY_PREFIX}${start}`
  return {
    pushed: false,
    async publish(start, slot) {
      if (!state.isUp()) return
      await state.redis
        .multi()
        .hset(keyOf(start), state.replicaId, JSON.stringify(encoded(slot)))
        .pexpire(keyOf(start), (options.slots + 2) * options.slotMs)
        .exec()
    },
    async read(starts) {
      if (!state.isUp() || starts.length === 0) return undefined
      const pipeline = state.redis.pipeline()
      for (const start of starts) pipeline.hgetall(keyOf(start))
      const answers = await pipeline.exec().catch(() => null)
      if (!answers) return undefined
      const slots = new Map<number, Slot[]>()
      for (const [i, [error, value]] of answers.entries()) {
        if (error) return undefined
        const start = starts[i] as number
        const others: Slot[] = []
        for (const [replica, text] of Object.entries((value ?? {}) as Record<string, string>)) {
          if (replica === state.replicaId) continue
          const slot = parseSlot(text, options)
          if (slot) others.push(slot)
          else state.reportJunk(keyOf(start), `replica ${replica.slice(0, 40)}'s field is not a traffic history slot`)
        }
        slots.set(start, others)
      }
      return slots
    },
    stop: () => undefined,
  }
}

const HOST_CHANNEL = 'history'
/** Slots of the other workers kept for the sums: the one just ended, and two before it for a late sender. */
const HOST_SLOTS_KEPT = 3

/**
 * The workers of one host without Redis: each sends its slot to the others through the primary (the host channel) as
 * it ends, and keeps theirs of the last few slots, so the page (read through any one worker) charts the host.
 */
export function createHostHistory(options: Omit<FleetHistoryOptions, 'state'>): FleetHistory {
  const received = new Map<number, Slot[]>()
  const stop = hostChannel.subscribe((channel, message) => {
    if (channel !== HOST_CHANNEL) return
    const start = parseJsonObject(message)?.start
    const slot = parseSlot(message, options)
    if (typeof start !== 'number' || !slot) return
    received.set(start, [...(received.get(start) ?? []), slot])
    for (const kept of received.keys()) if (kept <= start - HOST_SLOTS_KEPT * options.slotMs) received.delete(kept)
  })
  return {
    pushed: true,
    async publish(start, slot) {
      hostChannel.publish(HOST_CHANNEL, JSON.stringify({ ...encoded(slot), start }))
    },
    async read(starts) {
      return new Map(starts.flatMap((start) => (received.has(start) ? [[start, received.get(start) as Slot[]]] : [])))
    },
    stop,
  }
}

/** A slot as it travels: the fields without their trailing zeros, codes and charts only where there are any. */
function encoded(slot: Slot): { v: number; routes: Record<string, unknown> } {
  const routes: Record<string, unknown> = {}
  for (const [route, counts] of slot) routes[route] = { f: trimmed(counts.fields), ...(isEmpty(counts.codes) ? {} : { c: counts.codes }), ...(isEmpty(counts.charts) ? {} : { s: counts.charts }) }
  return { v: FORMAT, routes }
}

function trimmed(fields: readonly number[]): number[] {
  let end = fields.length
  while (end > 0 && fields[end - 1] === 0) end--
  return fields.slice(0, end)
}

/**
 * A record's own entry of `name`, never one it inherits: a series may be called `constructor` (a split target's name)
 * or `toString`. (`__proto__`, which no route file can name, is refused in a peer's slot.)
 */
export const ownEntry = <T>(record: Readonly<Record<string, T>>, name: string): T | undefined => (Object.hasOwn(record, name) ? record[name] : undefined)

export function isEmpty(record: object): boolean {
  for (const _ in record) return false
  return true
}

const isCount = (value: unknown): value is number => typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= MAX_COUNT

function countsOf(value: unknown, validName: (name: string) => boolean, limit: number): Record<string, number> | undefined {
  if (value === undefined) return {}
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined
  const entries = Object.entries(value)
  if (entries.length > limit) return undefined
  const counts: Record<string, number> = {}
  for (const [name, n] of entries) {
    if (name === '__proto__' || !validName(name) || !isCount(n)) return undefined
    counts[name] = n
  }
  return counts
}

/** A peer's slot, or undefined for text that is not one. Routes this replica does not have are left out. */
export function parseSlot(text: string, options: Pick<FleetHistoryOptions, 'fields' | 'knownRoute' | 'chartTitles'>): Slot | undefined {
  const parsed = parseJsonObject(text)
  if (parsed?.v !== FORMAT || typeof parsed.routes !== 'object' || parsed.routes === null || Array.isArray(parsed.routes)) return undefined
  const slot: Slot = new Map()
  for (const [route, entry] of Object.entries(parsed.routes as Record<string, unknown>)) {
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) return undefined
    const { f, c, s } = entry as Record<string, unknown>
    if (!Array.isArray(f) || f.length > options.fields || !f.every(isCount)) return undefined
    const codes = countsOf(c, (code) => CODE.test(code), MAX_SERIES)
    if (!codes) return undefined
    const charts: Record<string, Record<string, number>> = {}
    if (s !== undefined) {
      if (typeof s !== 'object' || s === null || Array.isArray(s)) return undefined
      for (const [title, series] of Object.entries(s)) {
        const counts = countsOf(series, (name) => name.length <= MAX_SERIES_NAME, MAX_SERIES)
        if (!options.chartTitles.has(title) || !counts) return undefined
        charts[title] = counts
      }
    }
    if (!options.knownRoute(route)) continue
    const fields = new Array<number>(options.fields).fill(0)
    f.forEach((n: number, i) => (fields[i] = n))
    slot.set(route, { fields, codes, charts })
  }
  return slot
}
