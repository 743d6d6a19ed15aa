import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { describe, expect, it } from 'vitest'
import { pino } from 'pino'
import { circuitBreakerPolicy } from '../../src/policies/circuit-breaker/circuit-breaker.js'
import { PolicyEvents } from '../../src/policies/policy-events.js'
import { DURATION_BUCKETS } from '../../src/proxy/attempt-stats.js'
import { SPLIT_CHART, SPLIT_REQUESTS } from '../../src/proxy/compile-route.js'
import { quantileMs, SLOT_MS, SLOTS, TrafficHistory, type RouteTotals } from '../../src/observability/traffic-history.js'
import { parseSlot, type FleetHistory, type Slot } from '../../src/state/fleet-history.js'

const BREAKER_CHART = circuitBreakerPolicy.charts?.[0]
if (!BREAKER_CHART) throw new Error('the breaker charts its transitions')
const TRANSITIONS = BREAKER_CHART.counter

/** A route's cumulative totals as the metrics keep them, fed by hand. */
class Totals implements RouteTotals {
  readonly byStatus = new Map<number, number>()
  readonly codes = new Map<string, number>()
  readonly durationBuckets = new Array<number>(DURATION_BUCKETS.length + 1).fill(0)
  constructor(readonly route: string) {}

  answer(status: number, seconds: number, code?: string, times = 1): void {
    for (let n = 0; n < times; n++) {
      this.byStatus.set(status, (this.byStatus.get(status) ?? 0) + 1)
      if (code) this.codes.set(code, (this.codes.get(code) ?? 0) + 1)
      let bucket = DURATION_BUCKETS.findIndex((bound) => seconds <= bound)
      if (bucket === -1) bucket = DURATION_BUCKETS.length
      this.durationBuckets[bucket] = (this.durationBuckets[bucket] ?? 0) + 1
    }
  }
}

function setUp(options: { fleet?: FleetHistory; routes?: string[] } = {}) {
  let now = 1_000 * SLOT_MS + 1_000
  const totals = new Map<string, Totals>()
  const events = new PolicyEvents()
  const table = { routes: new Set(options.routes ?? ['catalog', 'shop']), version: 1, appliedAt: new Date(now), refused: [] as string[] }
  const history = new TrafficHistory({
    totals: () => totals.values(),
    events: () => events,
    charts: [BREAKER_CHART as NonNullable<typeof BREAKER_CHART>, SPLIT_CHART],
    table: () => table,
    fleet: options.fleet,
    logger: pino({ level: 'silent' }),
    now: () => now,
  })
  const of = (route: string) => {
    let t = totals.get(route)
    if (!t) totals.set(route, (t = new Totals(route)))
    return t
  }
  history.start()
  /** Moves the clock to the next slot boundary and closes the slot that ended. */
  const nextSlot = () => {
    now = (Math.floor(now / SLOT_MS) + 1) * SLOT_MS + 5
    history.close()
  }
  return { history, of, events, table, nextSlot, advance: (ms: number) => (now += ms), now: () => now }
}

describe('the traffic history', () => {
  it('keeps each slot\'s counts as the difference of the metrics\' totals', () => {
    const { history, of, nextSlot } = setUp()
    of('catalog').answer(200, 0.003, undefined, 8)
    of('catalog').answer(503, 0.2, 'circuit_open', 2)
    of('catalog').answer(404, 0.001)
    nextSlot()
    of('catalog').answer(200, 0.003, undefined, 3)
    nextSlot()
    const view = history.route('catalog')
    expect(view.times).toHaveLength(SLOTS)
    expect(view.times.at(-1)! - view.times.at(-2)!).toBe(SLOT_MS)
    expect(view.requests.slice(-2)).toEqual([11, 3])
    expect(view.serverErrors.slice(-2)).toEqual([2, 0])
    expect(view.clientErrors.slice(-2)).toEqual([1, 0])
    expect(view.refusals).toEqual({ circuit_open: [...new Array(SLOTS - 2).fill(null), 2, 0] })
    // slots before the history started are unknown, not zero
    expect(view.requests.slice(0, SLOTS - 2).every((n) => n === null)).toBe(true)
    expect(history.summary().routes.catalog?.errors.slice(-2)).toEqual([2, 0])
  })

  it('takes a counter that went back (the metrics were reset) as counted anew', () => {
    const { history, of, nextSlot } = setUp()
    of('catalog').answer(200, 0.003, undefined, 10)
    nextSlot()
    of('catalog').byStatus.clear()
    of('catalog').durationBuckets.fill(0)
    of('catalog').answer(200, 0.003, undefined, 4)
    nextSlot()
    expect(history.route('catalog').requests.slice(-2)).toEqual([10, 4])
  })

  it('opens the slots a blocked timer slept through empty, and keeps 15 minutes', () => {
    const { history, of, nextSlot, advance } = setUp()
    of('catalog').answer(200, 0.003, undefined, 5)
    nextSlot()
    advance(3 * SLOT_MS)
    of('catalog').answer(200, 0.003, undefined, 7)
    nextSlot()
    expect(history.route('catalog').requests.slice(-5)).toEqual([5, 0, 0, 0, 7])
    for (let i = 0; i < SLOTS; i++) nextSlot()
    const view = history.route('catalog')
    expect(view.requests.every((n) => n === 0)).toBe(true)
  })

  it('draws the latency quantiles from the buckets, interpolated as Prometheus does', () => {
    const counts = new Array<number>(DURATION_BUCKETS.length + 1).fill(0)
    expect(quantileMs(0.5, counts)).toBeNull()
    counts[0] = 50 // ≤ 5 ms
    counts[5] = 50 // 100–250 ms
    expect(quantileMs(0.5, counts)).toBe(5)
    expect(quantileMs(0.99, counts)).toBe(100 + (150 * 49) / 50)
    counts[DURATION_BUCKETS.length] = 10 // past 30 s
    expect(quantileMs(0.99, counts)).toBe(30_000)
  })

  it('marks breaker transitions (a split target\'s named) and route table changes, and charts a split\'s shares', () => {
    const { history, of, events, table, nextSlot, now } = setUp()
    of('shop').answer(200, 0.01)
    events.count(TRANSITIONS, 'shop', 'open')
    events.count(TRANSITIONS, 'shop/canary', 'half_open')
    for (let i = 0; i < 3; i++) events.count(SPLIT_REQUESTS, 'shop', 'stable')
    events.count(SPLIT_REQUESTS, 'shop', 'canary')
    const changedAt = now()
    Object.assign(table, { version: 2, appliedAt: new Date(changedAt), refused: ['bad.yaml'] })
    nextSlot()
    events.count(TRANSITIONS, 'shop', 'closed')
    nextSlot()
    const view = history.route('shop')
    const [opened, closed] = view.times.slice(-2) as [number, number]
    expect(view.marks).toEqual([
      { at: opened, kind: 'breaker', text: 'breaker open' },
      { at: opened, kind: 'breaker', text: 'breaker canary: half-open' },
      { at: changedAt, kind: 'reload', text: 'route table v2 (refused: bad.yaml)' },
      { at: closed, kind: 'breaker', text: 'breaker closed' },
    ].sort((a, b) => a.at - b.at))
    expect(view.charts).toEqual([{ title: SPLIT_CHART.title, as: 'shares', series: { stable: [...new Array(SLOTS - 2).fill(null), 3, 0], canary: [...new Array(SLOTS - 2).fill(null), 1, 0] } }])
  })

  it('lets go of a route that left the table once its window is empty', () => {
    const { history, of, table, nextSlot } = setUp()
    of('shop').answer(200, 0.01)
    nextSlot()
    table.routes.delete('shop')
    of('shop').answer(200, 0.01)
    nextSlot()
    expect(history.summary().routes.shop).toBeUndefined()
    expect(history.size).toBe(1)
    for (let i = 0; i < SLOTS; i++) nextSlot()
    expect(history.size).toBe(0)
  })

  it('sums the other replicas\' copies of a slot into its own, again when a late one arrives, only while watched', async () => {
    const published = new Map<number, Slot>()
    const peers = new Map<number, Slot[]>()
    let reads = 0
    const fleet: FleetHistory = {
      pushed: false,
      stop: () => undefined,
      publish: async (start, slot) => void published.set(start, slot),
      read: async (starts) => {
        reads++
        return new Map(starts.map((start) => [start, peers.get(start) ?? []]))
      },
    }
    const { history, of, nextSlot, now } = setUp({ fleet })
    const peerSlot = (requests: number, slowBucket: number): Slot => {
      const fields = new Array<number>(3 + DURATION_BUCKETS.length + 1).fill(0)
      fields[0] = requests
      fields[3 + slowBucket] = requests
      return new Map([['catalog', { fields, codes: { rate_limited: 1 }, charts: {} }]])
    }
    of('catalog').answer(200, 0.003, undefined, 99)
    nextSlot()
    const first = now() - now() % SLOT_MS - SLOT_MS
    expect(published.get(first)?.get('catalog')?.fields[0]).toBe(99)
    // Nobody watches: the slot stays this replica's.
    await new Promise((resolve) => setImmediate(resolve))
    expect(reads).toBe(0)
    peers.set(first, [peerSlot(1, 9)]) // one request at 2.5–5 s on another replica
    await history.watch()
    let view = history.route('catalog')
    expect(view.requests.at(-1)).toBe(100)
    expect(view.fleet?.at(-1)).toBe(1)
    // p99 of 99 fast requests and one slow: the merged buckets say ≤ 5 ms, where an average of p99s would not
    expect(view.p99.at(-1)).toBeLessThanOrEqual(5)
    expect(view.refusals.rate_limited?.at(-1)).toBe(1)
    // a replica that published late is summed when the slot is read again, without counting anyone twice
    peers.set(first, [peerSlot(1, 9), peerSlot(100, 9)])
    of('catalog').answer(200, 0.003, undefined, 1)
    nextSlot()
    await history.watch()
    await expect.poll(() => history.route('catalog').requests.at(-2), { timeout: 5_000, interval: 100 }).toBe(200)
    view = history.route('catalog')
    expect(view.p99.at(-2)).toBeGreaterThan(2_500)
  })

  it('keeps every series name as its own (a split target named constructor), and refuses a peer\'s __proto__', async () => {
    const parse = (series: string) => parseSlot(`{"v":1,"routes":{"shop":{"f":[2],"s":{${JSON.stringify(SPLIT_CHART.title)}:${series}}}}}`, { fields: 3 + DURATION_BUCKETS.length + 1, knownRoute: () => true, chartTitles: new Set([SPLIT_CHART.title]) })
    expect(parse('{"__proto__":1}')).toBeUndefined()
    const peer = parse('{"toString":1,"constructor":2}')
    if (!peer) throw new Error('a well-formed slot is taken')
    const fleet: FleetHistory = { pushed: true, stop: () => undefined, publish: async () => undefined, read: async (starts) => new Map(starts.map((start) => [start, [peer]])) }
    const { history, of, events, nextSlot } = setUp({ fleet })
    of('shop').answer(200, 0.01, undefined, 3)
    for (let i = 0; i < 3; i++) events.count(SPLIT_REQUESTS, 'shop', 'constructor')
    nextSlot()
    await expect.poll(() => history.route('shop').requests.at(-1), { timeout: 5_000, interval: 100 }).toBe(5)
    const shares = history.route('shop').charts[0]?.series ?? {}
    expect(Object.fromEntries(Object.entries(shares).map(([name, values]) => [name, values.at(-1)]))).toEqual({ constructor: 5, toString: 1 })
    expect(Object.keys(Object)).toEqual([])
  })

  it('holds 1 000 busy routes in a bounded, measured amount of memory', () => {
    setFlagsFromString('--expose-gc')
    const gc = runInNewContext('gc') as () => void
    const routes = Array.from({ length: 1_000 }, (_, i) => `route-${i}`)
    /** Heap and typed arrays per route after 15 minutes of slots, each slot as `fill` makes it. */
    const perRoute = (fill: (route: string, of: ReturnType<typeof setUp>['of'], events: PolicyEvents) => void) => {
      gc()
      const before = process.memoryUsage()
      const { history, of, events, nextSlot } = setUp({ routes })
      for (let slot = 0; slot < SLOTS; slot++) {
        for (const route of routes) fill(route, of, events)
        nextSlot()
      }
      expect(history.size).toBe(1_000)
      gc()
      const after = process.memoryUsage()
      history.stop()
      return (after.heapUsed + after.arrayBuffers - before.heapUsed - before.arrayBuffers) / routes.length
    }
    const plain = perRoute((route, of) => of(route).answer(200, 0.004, undefined, 3))
    const busiest = perRoute((route, of, events) => {
      of(route).answer(200, 0.004, undefined, 3)
      of(route).answer(429, 0.001, 'rate_limited')
      events.count(TRANSITIONS, route, 'open')
    })
    const kib = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB per route, ${((bytes * 1000) / 1024 / 1024).toFixed(1)} MiB for 1 000`
    console.log(`traffic history: requests in every slot ${kib(plain)}; also a refusal code and a breaker mark in every slot ${kib(busiest)}`)
    expect(plain).toBeLessThan(16 * 1024)
    expect(busiest).toBeLessThan(64 * 1024)
  })
})
