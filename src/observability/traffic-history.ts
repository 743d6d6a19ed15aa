import type { Logger } from '../kernel/logger.js'
import type { CounterChart } from '../policies/policy.js'
import type { PolicyEvents } from '../policies/policy-events.js'
import { DURATION_BUCKETS } from '../proxy/attempt-stats.js'
import { isEmpty, ownEntry, type FleetHistory, type Slot, type SlotCounts } from '../state/fleet-history.js'

/** The history's resolution and length: 5 s slots over the last 15 minutes. */
export const SLOT_MS = 5_000
export const SLOTS = 180

// A slot's fixed fields, in order.
const REQUESTS = 0
const CLIENT_ERRORS = 1
const SERVER_ERRORS = 2
const DURATIONS = 3
export const SLOT_FIELDS = DURATIONS + DURATION_BUCKETS.length + 1
const MAX_U32 = 0xffffffff

/** How long after a slot ends the fleet's copies of it are read: the other replicas have published theirs by then. */
const MERGE_DELAY_MS = 2_500
/** Route table changes kept for the marks. */
const RELOADS_KEPT = 100

/** A route's counts since start, as the metrics keep them (they start again from 0 after a reset). */
export interface RouteTotals {
  readonly route: string
  readonly byStatus: ReadonlyMap<number, number>
  readonly codes: ReadonlyMap<string, number>
  readonly durationBuckets: readonly number[]
}

export interface TrafficHistoryOptions {
  readonly totals: () => Iterable<RouteTotals>
  readonly events: () => PolicyEvents
  readonly charts: readonly CounterChart[]
  /** The live route table: its routes' history is kept (others' is let go), and its changes are marked. */
  readonly table: () => { readonly routes: ReadonlySet<string>; readonly version: number; readonly appliedAt: Date; readonly refused: readonly string[] }
  /** With Redis: the other replicas' slots, summed into this one's. */
  readonly fleet?: FleetHistory
  readonly logger: Logger
  readonly now?: () => number
}

export interface Mark {
  readonly at: number
  readonly kind: 'breaker' | 'operator' | 'reload'
  readonly text: string
}

/** What the routes table draws its sparklines from: requests and 5xx answers per slot. */
export interface HistorySummary {
  readonly slotMs: number
  readonly times: number[]
  /** Per slot, 1 where it holds the fleet's counts and 0 where only this replica's (Redis away); absent without Redis. */
  readonly fleet?: number[]
  readonly routes: Record<string, { requests: (number | null)[]; errors: (number | null)[] }>
}

/** One slot as the live feed sends it, once it is final: requests and 5xx answers by route (routes with any). */
export interface SlotSummary {
  readonly at: number
  readonly fleet?: boolean
  readonly routes: Record<string, [requests: number, errors: number]>
}

/** One route's history as its view draws it. */
export interface RouteHistoryView {
  readonly route: string
  readonly slotMs: number
  readonly times: number[]
  readonly fleet?: number[]
  readonly requests: (number | null)[]
  readonly clientErrors: (number | null)[]
  readonly serverErrors: (number | null)[]
  /** Latency quantiles (ms) from the slot's duration buckets, interpolated within a bucket as Prometheus does. */
  readonly p50: (number | null)[]
  readonly p99: (number | null)[]
  readonly refusals: Record<string, (number | null)[]>
  readonly charts: { title: string; as: 'series' | 'shares'; series: Record<string, (number | null)[]> }[]
  readonly marks: Mark[]
}

/** A route's slots: the fixed fields in one typed array, the sparse rest (problem codes, charted counters) beside it. */
class RouteSlots {
  readonly fields = new Uint32Array(SLOTS * SLOT_FIELDS)
  readonly extras: (Pick<SlotCounts, 'codes' | 'charts'> | undefined)[] = new Array<undefined>(SLOTS).fill(undefined)

  clear(index: number): void {
    this.fields.fill(0, index * SLOT_FIELDS, (index + 1) * SLOT_FIELDS)
    this.extras[index] = undefined
  }

  add(index: number, counts: SlotCounts): void {
    const base = index * SLOT_FIELDS
    for (let i = 0; i < SLOT_FIELDS; i++) this.fields[base + i] = Math.min(MAX_U32, (this.fields[base + i] as number) + (counts.fields[i] ?? 0))
    if (isEmpty(counts.codes) && isEmpty(counts.charts)) return
    const extras = (this.extras[index] ??= { codes: {}, charts: {} })
    addCounts(extras.codes, counts.codes)
    for (const [title, series] of Object.entries(counts.charts)) addCounts(ownEntry(extras.charts, title) ?? (extras.charts[title] = {}), series)
  }

  isEmpty(): boolean {
    return this.fields.every((n) => n === 0)
  }
}

/** A route's counts at the last slot's close, to take the next slot's as the difference. */
interface Previous {
  readonly fields: Float64Array
  readonly codes: Map<string, number>
}

/**
 * Each replica's short history of its routes' traffic: every 5 s, the metrics' counts since the last slot become a
 * slot (requests, 4xx, 5xx, refusals by problem code, duration buckets, the policies' charted counters), kept for 15
 * minutes in a ring. Nothing is added to the request path: the slot is the difference of the counters the metrics
 * already keep. With Redis each replica publishes its slots and, while someone watches the status page, sums the
 * others' into its own: counts add, and quantiles come from the summed duration buckets, never from averaged p99s.
 * Memory per route with traffic: one Uint32Array of 180 × 16 (11.5 KiB) and an object per slot that had refusals or
 * charted counts; a route without traffic has none.
 */
export class TrafficHistory {
  readonly #options: TrafficHistoryOptions
  readonly #now: () => number
  readonly #routes = new Map<string, RouteSlots>()
  /** The start of the slot each ring index holds (-1: none yet). */
  readonly #starts = new Float64Array(SLOTS).fill(-1)
  /** 1 where the ring holds the fleet's sums, 0 where only this replica's counts. */
  readonly #merged = new Uint8Array(SLOTS)
  /** This replica's own last slots, kept to sum the fleet's again when a late replica's copy arrives. */
  readonly #own = new Map<number, Slot>()
  readonly #previous = new Map<string, Previous>()
  readonly #previousCharted = new Map<string, number>()
  readonly #reloads: Mark[] = []
  readonly #listeners = new Set<(slot: SlotSummary) => void>()
  #lastStart = -1
  #tableVersion = -1
  #watchedUntil = 0
  #merging: Promise<void> = Promise.resolve()
  #timer: NodeJS.Timeout | undefined

  constructor(options: TrafficHistoryOptions) {
    this.#options = options
    this.#now = options.now ?? Date.now
  }

  /** Closes a slot at every 5 s boundary of the clock (all replicas' slots cover the same 5 s). */
  start(): void {
    this.#lastStart = Math.floor(this.#now() / SLOT_MS) * SLOT_MS - SLOT_MS
    this.#takeSlot()
    this.#noteTableChange()
    const schedule = () => {
      this.#timer = setTimeout(() => {
        this.close()
        schedule()
      }, SLOT_MS - (this.#now() % SLOT_MS) + 5)
      this.#timer.unref()
    }
    schedule()
  }

  stop(): void {
    clearTimeout(this.#timer)
    this.#options.fleet?.stop()
  }

  /** Calls `listener` with each slot once it is final (after the fleet's copies are summed in, with Redis). */
  onSlot(listener: (slot: SlotSummary) => void): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  /**
   * Someone looks at the history: for the next 15 minutes the fleet's copies of each slot are summed in, and the
   * slots held as this replica's alone are summed now (the whole window, after a quiet spell or a restart).
   */
  async watch(): Promise<void> {
    const now = this.#now()
    const wasWatched = now < this.#watchedUntil
    this.#watchedUntil = now + SLOTS * SLOT_MS
    if (this.#options.fleet && !this.#options.fleet.pushed && !wasWatched) await this.#mergeFleet(this.#window().filter((start) => this.#merged[indexOf(start)] === 0))
  }

  /** Closes the slot that just ended and hands it on; the timer calls it at each boundary. */
  close(): void {
    const start = Math.floor(this.#now() / SLOT_MS) * SLOT_MS - SLOT_MS
    if (start <= this.#lastStart) return
    // Slots the timer slept through (a blocked event loop) are opened empty; the counts since go in the last one.
    for (let s = Math.max(this.#lastStart + SLOT_MS, start - (SLOTS - 1) * SLOT_MS); s <= start; s += SLOT_MS) this.#open(s)
    this.#lastStart = start
    const own = this.#takeSlot()
    for (const [route, counts] of own) this.#slotsOf(route).add(indexOf(start), counts)
    this.#own.set(start, own)
    this.#own.delete(start - 2 * SLOT_MS)
    this.#noteTableChange()
    const live = this.#live()
    for (const [route, slots] of this.#routes) if (!live.has(route) && slots.isEmpty()) this.#routes.delete(route)
    const { fleet } = this.#options
    if (!fleet) return this.#announce(start)
    void fleet.publish(start, own).catch((error: unknown) => this.#options.logger.debug({ err: error }, 'traffic history slot not published'))
    setTimeout(() => {
      const merge = fleet.pushed || this.#now() < this.#watchedUntil ? this.#mergeFleet([start, start - SLOT_MS]) : Promise.resolve()
      void merge.then(() => this.#announce(start))
    }, MERGE_DELAY_MS).unref()
  }

  /** The sparklines of these routes (of the live ones, when none are named). */
  summary(only: ReadonlySet<string> = this.#live()): HistorySummary {
    const times = this.#window()
    const routes: HistorySummary['routes'] = {}
    for (const [route, slots] of this.#routes) {
      if (!only.has(route)) continue
      routes[route] = { requests: this.#series(times, slots, REQUESTS), errors: this.#series(times, slots, SERVER_ERRORS) }
    }
    return { slotMs: SLOT_MS, times, ...this.#fleetFlags(times), routes }
  }

  /** One route's history, with the breaker transitions and route table changes of its window marked. */
  route(name: string): RouteHistoryView {
    const times = this.#window()
    const slots = this.#routes.get(name) ?? new RouteSlots()
    const known = (i: number) => this.#starts[indexOf(times[i] as number)] === times[i]
    const field = (f: number) => this.#series(times, slots, f)
    const extra = (pick: (extras: NonNullable<RouteSlots['extras'][number]>) => Record<string, number> | undefined): Record<string, (number | null)[]> => {
      const out: Record<string, (number | null)[]> = {}
      times.forEach((start, i) => {
        for (const [name, n] of Object.entries(pick(slots.extras[indexOf(start)] ?? NO_EXTRAS) ?? {})) (ownEntry(out, name) ?? (out[name] = times.map((_, j) => (known(j) ? 0 : null))))[i] = n
      })
      return out
    }
    const quantile = (q: number) =>
      times.map((start, i) => {
        if (!known(i)) return null
        const base = indexOf(start) * SLOT_FIELDS
        return quantileMs(q, slots.fields.subarray(base + DURATIONS, base + SLOT_FIELDS))
      })
    const charts: RouteHistoryView['charts'] = []
    const marks: Mark[] = []
    for (const chart of this.#options.charts) {
      const series = extra((extras) => extras.charts[chart.title])
      if (chart.as !== 'marks') {
        if (!isEmpty(series)) charts.push({ title: chart.title, as: chart.as, series })
        continue
      }
      for (const [what, counts] of Object.entries(series))
        counts.forEach((n, i) => {
          if (n) marks.push({ at: times[i] as number, kind: 'breaker', text: `${chart.title.toLowerCase()} ${what.replace('_', '-')}${n > 1 ? ` ×${n}` : ''}` })
        })
    }
    const from = times[0] ?? 0
    marks.push(...this.#reloads.filter((mark) => mark.at >= from))
    return {
      route: name,
      slotMs: SLOT_MS,
      times,
      ...this.#fleetFlags(times),
      requests: field(REQUESTS),
      clientErrors: field(CLIENT_ERRORS),
      serverErrors: field(SERVER_ERRORS),
      p50: quantile(0.5),
      p99: quantile(0.99),
      refusals: extra((extras) => extras.codes),
      charts,
      marks: marks.sort((a, b) => a.at - b.at),
    }
  }

  /** Routes with a history now (for the memory figure). */
  get size(): number {
    return this.#routes.size
  }

  #live(): ReadonlySet<string> {
    return this.#options.table().routes
  }

  /** The slot starts of the window, oldest first, ending with the last closed slot. */
  #window(): number[] {
    return Array.from({ length: SLOTS }, (_, i) => this.#lastStart - (SLOTS - 1 - i) * SLOT_MS)
  }

  #series(times: readonly number[], slots: RouteSlots, field: number): (number | null)[] {
    return times.map((start) => {
      const index = indexOf(start)
      return this.#starts[index] === start ? (slots.fields[index * SLOT_FIELDS + field] as number) : null
    })
  }

  #fleetFlags(times: readonly number[]): { fleet?: number[] } {
    return this.#options.fleet ? { fleet: times.map((start) => this.#merged[indexOf(start)] as number) } : {}
  }

  #slotsOf(route: string): RouteSlots {
    let slots = this.#routes.get(route)
    if (!slots) this.#routes.set(route, (slots = new RouteSlots()))
    return slots
  }

  #open(start: number): void {
    const index = indexOf(start)
    this.#starts[index] = start
    this.#merged[index] = 0
    for (const slots of this.#routes.values()) slots.clear(index)
  }

  /** Every route's counts since the last slot: the metrics' totals and the charted counters, less what they were then. */
  #takeSlot(): Slot {
    const slot: Slot = new Map()
    const live = this.#live()
    const entry = (route: string): SlotCounts => {
      let counts = slot.get(route)
      if (!counts) slot.set(route, (counts = { fields: new Array<number>(SLOT_FIELDS).fill(0), codes: {}, charts: {} }))
      return counts
    }
    for (const totals of this.#options.totals()) {
      let previous = this.#previous.get(totals.route)
      if (!previous) this.#previous.set(totals.route, (previous = { fields: new Float64Array(SLOT_FIELDS), codes: new Map() }))
      const now = cumulativeFields(totals)
      const fields = now.map((n, i) => since(n, previous.fields[i] as number))
      previous.fields.set(now)
      const codes: Record<string, number> = {}
      for (const [code, n] of totals.codes) {
        const d = since(n, previous.codes.get(code) ?? 0)
        previous.codes.set(code, n)
        if (d > 0) codes[code] = d
      }
      if (live.has(totals.route) && (fields[REQUESTS] as number) > 0) slot.set(totals.route, { fields, codes, charts: {} })
    }
    const events = this.#options.events()
    for (const chart of this.#options.charts) {
      for (const { route: key, outcome, count } of events.of(chart.counter)) {
        const series = chart.series(outcome)
        if (series === undefined) continue
        const seen = `${chart.title}\u0000${key}\u0000${outcome}`
        const d = since(count, this.#previousCharted.get(seen) ?? 0)
        this.#previousCharted.set(seen, count)
        // A split target's policies count under `<route>/<target>`.
        const at = key.indexOf('/')
        const route = at === -1 ? key : key.slice(0, at)
        if (d === 0 || !live.has(route)) continue
        const name = at === -1 ? series : `${key.slice(at + 1)}: ${series}`
        const charts = (entry(route).charts[chart.title] ??= {})
        charts[name] = (ownEntry(charts, name) ?? 0) + d
      }
    }
    return slot
  }

  #noteTableChange(): void {
    const { version, appliedAt, refused } = this.#options.table()
    if (version === this.#tableVersion) return
    if (this.#tableVersion !== -1 && version > 0) {
      this.#reloads.push({ at: appliedAt.getTime(), kind: 'reload', text: `route table v${version}${refused.length > 0 ? ` (refused: ${refused.join(', ')})` : ''}` })
      if (this.#reloads.length > RELOADS_KEPT) this.#reloads.shift()
    }
    this.#tableVersion = version
  }

  /** Sums the other replicas' copies of these slots into this one's own (one merge at a time). */
  #mergeFleet(starts: readonly number[]): Promise<void> {
    const { fleet } = this.#options
    if (!fleet || starts.length === 0) return Promise.resolve()
    // One merge that fails must not stop the next ones (nor reject where nobody listens).
    this.#merging = this.#merging.then(async () => {
      const others = await fleet.read(starts).catch(() => undefined)
      if (!others) return
      const oldest = this.#lastStart - (SLOTS - 1) * SLOT_MS
      for (const [start, slots] of others) {
        if (start < oldest || start > this.#lastStart) continue
        const index = indexOf(start)
        if (this.#starts[index] !== start) this.#open(start)
        else if (this.#merged[index] === 1) {
          // Summed before: start again from this replica's own counts, if it still has them.
          const own = this.#own.get(start)
          if (!own) continue
          for (const routeSlots of this.#routes.values()) routeSlots.clear(index)
          for (const [route, counts] of own) this.#slotsOf(route).add(index, counts)
        }
        const live = this.#live()
        for (const slot of slots) for (const [route, counts] of slot) if (live.has(route)) this.#slotsOf(route).add(index, counts)
        this.#merged[index] = 1
      }
    }).catch((error: unknown) => this.#options.logger.warn({ err: error }, 'traffic history: the fleet\'s slots could not be summed'))
    return this.#merging
  }

  #announce(start: number): void {
    if (this.#listeners.size === 0) return
    const index = indexOf(start)
    const routes: SlotSummary['routes'] = {}
    for (const [route, slots] of this.#routes) {
      const requests = slots.fields[index * SLOT_FIELDS + REQUESTS] as number
      if (requests > 0) routes[route] = [requests, slots.fields[index * SLOT_FIELDS + SERVER_ERRORS] as number]
    }
    const slot: SlotSummary = { at: start, ...(this.#options.fleet ? { fleet: this.#merged[index] === 1 } : {}), routes }
    for (const listener of this.#listeners) listener(slot)
  }
}

const NO_EXTRAS = { codes: {}, charts: {} }

const indexOf = (start: number): number => Math.floor(start / SLOT_MS) % SLOTS

/** A count's increase; a count lower than before was reset, and all of it is new. */
const since = (now: number, before: number): number => (now >= before ? now - before : now)

function cumulativeFields(totals: RouteTotals): number[] {
  const fields = new Array<number>(SLOT_FIELDS).fill(0)
  for (const [status, n] of totals.byStatus) {
    if (status >= 500) fields[SERVER_ERRORS]! += n
    else if (status >= 400) fields[CLIENT_ERRORS]! += n
  }
  totals.durationBuckets.forEach((n, i) => {
    fields[DURATIONS + i] = n
    fields[REQUESTS]! += n
  })
  return fields
}

/**
 * The q-quantile of a slot's durations in ms, from non-cumulative bucket counts: linear within the bucket it falls
 * in (Prometheus' histogram_quantile); past the largest bound, that bound. Null for a slot without requests.
 */
export function quantileMs(q: number, buckets: ArrayLike<number>): number | null {
  let total = 0
  for (let i = 0; i < buckets.length; i++) total += buckets[i] as number
  if (total === 0) return null
  const rank = q * total
  let below = 0
  for (let i = 0; i < buckets.length; i++) {
    const n = buckets[i] as number
    if (n > 0 && below + n >= rank) {
      if (i >= DURATION_BUCKETS.length) break
      const lower = i === 0 ? 0 : (DURATION_BUCKETS[i - 1] as number)
      const upper = DURATION_BUCKETS[i] as number
      return Math.round((lower + ((upper - lower) * (rank - below)) / n) * 10_000) / 10
    }
    below += n
  }
  return (DURATION_BUCKETS.at(-1) as number) * 1000
}

function addCounts(into: Record<string, number>, counts: Record<string, number>): void {
  for (const [name, n] of Object.entries(counts)) into[name] = Math.min(MAX_U32, (ownEntry(into, name) ?? 0) + n)
}

