import { describe, expect, it } from 'vitest'
import { mergeRouteSources } from '../../src/config/merge-sources.js'

const file = (name: string, prefix: string, target = 'service: s') => `routes:\n  - name: ${name}\n    prefix: ${prefix}\n    ${target}\n`

describe('mergeRouteSources', () => {
  it('applies every valid source', () => {
    const merged = mergeRouteSources([{ source: 'a.yaml', text: file('a', '/a') }, { source: 'b.yaml', text: file('b', '/b') }], new Map())
    expect(merged.routes.map((r) => r.name)).toEqual(['a', 'b'])
    expect(merged.sources.map((s) => s.state)).toEqual(['applied', 'applied'])
  })

  it('keeps the last good version of a source that turned bad, and applies the others', () => {
    const first = mergeRouteSources([{ source: 'a.yaml', text: file('a', '/a') }, { source: 'b.yaml', text: file('b', '/b') }], new Map())
    const second = mergeRouteSources([{ source: 'a.yaml', text: 'routes: [' }, { source: 'b.yaml', text: file('b2', '/b') }], first.lastGood)
    expect(second.routes.map((r) => r.name)).toEqual(['a', 'b2'])
    expect(second.sources.map((s) => s.state)).toEqual(['last-good', 'applied'])
    expect(second.sources[0]?.errors[0]?.file).toBe('a.yaml')
    // the last good version is remembered until the source is fixed
    const third = mergeRouteSources([{ source: 'a.yaml', text: 'routes: [' }, { source: 'b.yaml', text: file('b2', '/b') }], second.lastGood)
    expect(third.routes.map((r) => r.name)).toEqual(['a', 'b2'])
  })

  it('refuses a new bad source outright', () => {
    const merged = mergeRouteSources([{ source: 'a.yaml', text: 'routes: 7' }], new Map())
    expect(merged.routes).toEqual([])
    expect(merged.sources[0]?.state).toBe('refused')
  })

  it('lets the earlier source keep a contested name or prefix', () => {
    const merged = mergeRouteSources([{ source: 'a.yaml', text: file('a', '/x') }, { source: 'b.yaml', text: file('b', '/x') }, { source: 'c.yaml', text: file('a', '/c') }], new Map())
    expect(merged.routes.map((r) => r.name)).toEqual(['a'])
    expect(merged.sources[1]?.errors[0]?.message).toBe('prefix "/x" is already routed by "a" at a.yaml:2')
    expect(merged.sources[2]?.errors[0]?.message).toBe('route name "a" is already defined at a.yaml:2')
  })

  it('reports a source that could not be read', () => {
    const merged = mergeRouteSources([{ source: 'a.yaml', text: '', readError: 'cannot read file: EACCES' }], new Map())
    expect(merged.sources[0]).toMatchObject({ state: 'refused', errors: [{ file: 'a.yaml', line: 1, message: 'cannot read file: EACCES' }] })
  })

  it('keeps a route with the file that serves it when a new file that sorts first claims it', () => {
    const serving = mergeRouteSources([{ source: 'b.yaml', text: file('b', '/x') }], new Map())
    const merged = mergeRouteSources([{ source: 'a.yaml', text: file('a', '/x') }, { source: 'b.yaml', text: file('b', '/x') }], serving.lastGood)
    expect(merged.routes.map((r) => r.name)).toEqual(['b'])
    expect(merged.sources.map((s) => [s.source, s.state])).toEqual([['a.yaml', 'refused'], ['b.yaml', 'applied']])
    expect(merged.sources[0]?.errors[0]?.message).toMatch(/prefix "\/x" is already routed by "b" at b\.yaml:2/)
  })
})
