import { describe, expect, it } from 'vitest'
import { chooseSplitTarget, type SplitChoice } from '../../src/balancer/split.js'

const target = (name: string, weight: number, up = true): SplitChoice => ({ name, weight, available: () => up })
const keys = Array.from({ length: 20_000 }, (_, i) => `user-${i}`)
const shareOf = (name: string, chosen: readonly SplitChoice[]) => chosen.filter((t) => t.name === name).length / chosen.length

describe('a split\'s choice of target', () => {
  it('draws by weight without a key: 90/10 within half a point over 200 000 draws', () => {
    const targets = [target('users', 90), target('canary', 10)]
    // Half a point is 7.5 standard deviations of the canary's share over 200 000 draws (2.4 over 20 000: a test that
    // failed one run in fifty), and still far inside a wrong weight (85/15).
    const chosen = Array.from({ length: 200_000 }, () => chooseSplitTarget(targets, undefined))
    expect(Math.abs(shareOf('canary', chosen) - 0.1)).toBeLessThan(0.005)
  })

  it('keeps a key on one target, in proportion to the weights, and moves only the keys a weight change must', () => {
    const before = [target('users', 90), target('canary', 10)]
    const first = keys.map((key) => chooseSplitTarget(before, key))
    expect(keys.map((key) => chooseSplitTarget(before, key))).toEqual(first)
    expect(Math.abs(shareOf('canary', first) - 0.1)).toBeLessThan(0.01)

    const after = [target('users', 80), target('canary', 20)]
    const second = keys.map((key) => chooseSplitTarget(after, key))
    expect(Math.abs(shareOf('canary', second) - 0.2)).toBeLessThan(0.01)
    const moved = keys.flatMap((_, i) => (first[i]?.name === second[i]?.name ? [] : [second[i]?.name]))
    // only users → canary, about the 10 points the share grew by: no key of the canary went back
    expect(new Set(moved)).toEqual(new Set(['canary']))
    expect(Math.abs(moved.length / keys.length - 0.1)).toBeLessThan(0.01)
  })

  it('gives a target\'s share to the others while it cannot take requests, its keys alone moving', () => {
    const all = [target('a', 50), target('b', 30), target('c', 20)]
    const withoutC = [all[0] as SplitChoice, all[1] as SplitChoice, target('c', 20, false)]
    const first = keys.map((key) => chooseSplitTarget(all, key).name)
    const second = keys.map((key) => chooseSplitTarget(withoutC, key).name)
    expect(second).not.toContain('c')
    expect(keys.every((_, i) => first[i] === 'c' || first[i] === second[i])).toBe(true)
    // a : b stays 5 : 3
    expect(Math.abs(second.filter((n) => n === 'a').length / keys.length - 50 / 80)).toBeLessThan(0.01)
    const drawn = keys.map(() => chooseSplitTarget(withoutC, undefined).name)
    expect(drawn).not.toContain('c')
  })

  it('sends nothing to a weight of 0, even when the other side is down; with no side able, the weighted one answers', () => {
    const blueGreen = [target('blue', 100, false), target('green', 0)]
    expect(new Set(keys.slice(0, 500).map((key) => chooseSplitTarget(blueGreen, key).name))).toEqual(new Set(['blue']))
    expect(new Set(keys.slice(0, 500).map(() => chooseSplitTarget(blueGreen, undefined).name))).toEqual(new Set(['blue']))
  })
})
