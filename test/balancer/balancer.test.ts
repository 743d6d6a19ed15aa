import { describe, expect, it } from 'vitest'
import { createBalancer, InFlight } from '../../src/balancer/balancer.js'
import type { Instance } from '../../src/balancer/instance.js'

const instance = (id: string, weight = 1): Instance => ({ id, origin: `http://${id}:80`, weight, tags: [], meta: {} })
const count = (picks: (Instance | undefined)[]) => picks.reduce<Record<string, number>>((acc, p) => ({ ...acc, [p?.id ?? 'none']: (acc[p?.id ?? 'none'] ?? 0) + 1 }), {})

describe('balancers', () => {
  const three = [instance('a'), instance('b'), instance('c')]

  it('round-robin visits every instance in turn', () => {
    const pick = createBalancer('round-robin', { inFlight: new InFlight() })
    expect(Array.from({ length: 6 }, () => pick(three, {})?.id)).toEqual(['a', 'b', 'c', 'a', 'b', 'c'])
  })

  it('round-robin honours weights', () => {
    const pick = createBalancer('round-robin', { inFlight: new InFlight() })
    expect(count(Array.from({ length: 400 }, () => pick([instance('a', 3), instance('b', 1)], {})))).toEqual({ a: 300, b: 100 })
  })

  it('random spreads by weight', () => {
    let seed = 1
    const random = () => ((seed = (seed * 48271) % 2147483647) / 2147483647)
    const pick = createBalancer('random', { inFlight: new InFlight(), random })
    const counts = count(Array.from({ length: 4000 }, () => pick([instance('a', 1), instance('b', 3)], {})))
    expect(counts.b! / counts.a!).toBeGreaterThan(2.5)
    expect(counts.b! / counts.a!).toBeLessThan(3.5)
  })

  it('least-request prefers the less loaded of two', () => {
    const inFlight = new InFlight()
    for (let i = 0; i < 5; i++) inFlight.start('http://a:80')
    const pick = createBalancer('least-request', { inFlight })
    expect(count(Array.from({ length: 100 }, () => pick([instance('a'), instance('b')], {})))).toEqual({ b: 100 })
  })

  it('in-flight counts go back down once, however often done is called', () => {
    const inFlight = new InFlight()
    const done = inFlight.start('o')
    inFlight.start('o')
    done()
    done()
    expect(inFlight.get('o')).toBe(1)
  })

  it('consistent-hash keeps a key on its instance and moves only the keys of a removed instance', () => {
    const pick = createBalancer('consistent-hash', { inFlight: new InFlight() })
    const keys = Array.from({ length: 300 }, (_, i) => `user-${i}`)
    const before = new Map(keys.map((k) => [k, pick(three, { hashKey: k })?.id]))
    expect(keys.every((k) => pick(three, { hashKey: k })?.id === before.get(k))).toBe(true)
    expect(new Set(before.values()).size).toBe(3)
    const after = new Map(keys.map((k) => [k, pick([instance('a'), instance('b')], { hashKey: k })?.id]))
    const moved = keys.filter((k) => before.get(k) !== after.get(k))
    expect(moved.every((k) => before.get(k) === 'c')).toBe(true)
  })

  it('avoids excluded instances while others are left, and returns nothing for no instances', () => {
    for (const kind of ['round-robin', 'random', 'least-request', 'consistent-hash'] as const) {
      const pick = createBalancer(kind, { inFlight: new InFlight() })
      expect(pick([], {})).toBeUndefined()
      for (let i = 0; i < 20; i++) expect(pick(three, { exclude: new Set(['a', 'b']), hashKey: `k${i}` })?.id).toBe('c')
      expect(pick([instance('a')], { exclude: new Set(['a']) })?.id).toBe('a')
    }
  })

  describe('consistent-hash spread (instance ids that differ in one character)', () => {
    const origins = ['http://127.0.0.1:9001', 'http://127.0.0.1:9002', 'http://127.0.0.1:9003']
    const keys = Array.from({ length: 3000 }, (_, i) => `user-${i}`)
    const shares = (set: Instance[]) => {
      const pick = createBalancer('consistent-hash', { inFlight: new InFlight() })
      const counts = count(keys.map((k) => pick(set, { hashKey: k })))
      return Object.fromEntries(Object.entries(counts).map(([id, n]) => [id, (n * 100) / keys.length]))
    }

    it('gives each equal instance its third, within 5 points', () => {
      for (const share of Object.values(shares(origins.map((o) => instance(o))))) expect(Math.abs(share - 100 / 3)).toBeLessThan(5)
    })

    it('honours weights 1:3:1', () => {
      const spread = shares([instance(origins[0]!, 1), instance(origins[1]!, 3), instance(origins[2]!, 1)])
      expect(Math.abs(spread[origins[0]!]! - 20)).toBeLessThan(5)
      expect(Math.abs(spread[origins[1]!]! - 60)).toBeLessThan(5)
      expect(Math.abs(spread[origins[2]!]! - 20)).toBeLessThan(5)
    })

    it('moves only the keys of an instance that leaves', () => {
      const pick = createBalancer('consistent-hash', { inFlight: new InFlight() })
      const all = origins.map((o) => instance(o))
      const before = keys.map((k) => pick(all, { hashKey: k })?.id)
      const after = keys.map((k) => pick(all.slice(0, 2), { hashKey: k })?.id)
      keys.forEach((_k, i) => {
        if (before[i] !== origins[2]) expect(after[i]).toBe(before[i])
      })
    })
  })
})
