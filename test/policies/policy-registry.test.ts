import { Type } from '@sinclair/typebox'
import { describe, expect, it } from 'vitest'
import { parseRouteFile } from '../../src/config/parse-route-file.js'
import { POLICIES } from '../../src/policies/index.js'
import type { PolicyDeps, PolicyKind, RoutePolicy } from '../../src/policies/policy.js'
import { PolicyRegistry, type RouteWithPolicies } from '../../src/policies/policy-registry.js'
import { policyHolders } from '../../src/proxy/compile-route.js'

/** A policy kind that records what it made and stopped; `failOn` makes `create` throw for that config. */
function recordingKind(key: string, failOn?: unknown) {
  const made: { config: unknown; stopped: boolean }[] = []
  const kind: PolicyKind<unknown, unknown> = {
    key,
    schema: Type.Unknown(),
    toConfig: (spec) => spec,
    create: (_route, config): RoutePolicy => {
      if (failOn !== undefined && JSON.stringify(config) === JSON.stringify(failOn)) throw new Error(`cannot make ${key}`)
      const record = { config, stopped: false }
      made.push(record)
      return { describe: () => ({ config }), stop: () => void (record.stopped = true) }
    },
  }
  return { kind, made }
}

const route = (name: string, policies: Record<string, unknown>, responseMs = 1_000): RouteWithPolicies => ({ name, timeout: { connectMs: 100, responseMs }, policies: new Map(Object.entries(policies)) })
const deps = {} as PolicyDeps
const configOf = (policy: RoutePolicy | undefined) => (policy?.describe?.() as { config: unknown } | undefined)?.config

describe('PolicyRegistry', () => {
  it('keeps a policy whose config is unchanged (Sets compared by content), in POLICIES order whatever the route lists', () => {
    const a = recordingKind('a')
    const b = recordingKind('b')
    const registry = new PolicyRegistry([a.kind, b.kind], deps)
    const first = registry.build([route('r', { b: { n: 1 }, a: { methods: new Set(['GET']) } })])
    first.commit()
    const second = registry.build([route('r', { b: { n: 1 }, a: { methods: new Set(['GET']) } })])
    second.commit()
    expect(second.byRoute.get('r')?.map((p) => p.key)).toEqual(['a', 'b'])
    expect(second.byRoute.get('r')?.[0]?.policy).toBe(first.byRoute.get('r')?.[0]?.policy)
    expect([a.made.length, b.made.length]).toEqual([1, 1])
  })

  it('makes a new policy for a changed config or route timeout, and stops the old one only when the new table commits', () => {
    const a = recordingKind('a')
    const registry = new PolicyRegistry([a.kind], deps)
    registry.build([route('r', { a: 1 })]).commit()
    const changed = registry.build([route('r', { a: 2 })])
    expect(a.made.map((m) => m.stopped)).toEqual([false, false]) // the live table still uses the first
    changed.commit()
    expect(a.made.map((m) => m.stopped)).toEqual([true, false])
    registry.build([route('r', { a: 2 }, 2_000)]).commit()
    expect(a.made.map((m) => m.stopped)).toEqual([true, true, false])
  })

  it('stops a policy a committed table no longer uses, and only then', () => {
    const a = recordingKind('a')
    const registry = new PolicyRegistry([a.kind], deps)
    registry.build([route('r', { a: 1 }), route('s', { a: 1 })]).commit()
    const without = registry.build([route('r', { a: 1 }), route('s', {})])
    expect(a.made.map((m) => m.stopped)).toEqual([false, false])
    without.commit()
    expect(a.made.map((m) => m.stopped)).toEqual([false, true])
    expect(without.byRoute.get('s')).toEqual([])
  })

  it('leaves the live policies running when a build is abandoned, or a create throws, and stops what that build made', () => {
    const a = recordingKind('a', 'broken')
    const registry = new PolicyRegistry([a.kind], deps)
    const live = registry.build([route('r', { a: 1 })])
    live.commit()
    registry.build([route('r', { a: 2 })]).abandon()
    expect(a.made.map((m) => [m.config, m.stopped])).toEqual([[1, false], [2, true]])
    expect(() => registry.build([route('r', { a: 3 }), route('s', { a: 'broken' })])).toThrow('cannot make a')
    expect(a.made.map((m) => [m.config, m.stopped])).toEqual([[1, false], [2, true], [3, true]])
    // the live one is still what an unchanged config gets
    const again = registry.build([route('r', { a: 1 })])
    expect(configOf(again.byRoute.get('r')?.[0]?.policy)).toBe(1)
    expect(a.made).toHaveLength(3)
  })

  it('stops every live policy on stop()', () => {
    const a = recordingKind('a')
    const registry = new PolicyRegistry([a.kind], deps)
    registry.build([route('r', { a: 1 }), route('s', { a: 2 })]).commit()
    registry.stop()
    expect(a.made.every((m) => m.stopped)).toBe(true)
  })
})

describe('policies of a split route', () => {
  it('are the route\'s but for the kinds made per target, which come last in POLICIES and get one live policy per target', () => {
    const firstPerTarget = POLICIES.findIndex((kind) => kind.perTarget)
    expect(firstPerTarget).toBeGreaterThan(0)
    expect(POLICIES.slice(firstPerTarget).every((kind) => kind.perTarget)).toBe(true)

    const text = 'routes:\n  - name: users\n    prefix: /u\n    split:\n      - { service: users, weight: 9 }\n      - { upstreams: [http://a:1], weight: 1, name: canary }\n    retry: { attempts: 2 }\n    circuitBreaker: { volumeThreshold: 5 }\n'
    const [definition] = parseRouteFile('x.yaml', text).routes
    const holders = policyHolders(definition as NonNullable<typeof definition>, POLICIES)
    expect(holders.map((h) => [h.name, [...h.policies.keys()]])).toEqual([
      ['users', ['retry']],
      ['users/users', ['circuitBreaker']],
      ['users/canary', ['circuitBreaker']],
    ])
  })
})
