import { describe, expect, it } from 'vitest'
import type { HealthEntry } from '../../src/discovery/consul-client.js'
import { routeSourceFromMeta } from '../../src/config/providers/consul-route-provider.js'
import { nextIndex, toInstances } from '../../src/discovery/to-instances.js'

const entry = (service: Partial<HealthEntry['Service']>, node: Partial<HealthEntry['Node']> = {}): HealthEntry => ({
  Node: { Node: 'n1', Address: '10.0.0.1', ...node },
  Service: { ID: 'users-1', Service: 'users', Address: '', Port: 9001, Tags: null, Meta: null, ...service },
})

describe('toInstances', () => {
  it.each([
    ['the service address', entry({ Address: '172.17.0.5' }), { origin: 'http://172.17.0.5:9001' }],
    ['the node address when the service has none', entry({ Address: '' }), { origin: 'http://10.0.0.1:9001' }],
    ['an IPv6 address in brackets', entry({ Address: 'fd00::5' }), { origin: 'http://[fd00::5]:9001' }],
    ['the passing weight', entry({ Weights: { Passing: 5, Warning: 1 } }), { weight: 5 }],
    ['weight 1 without weights', entry({}), { weight: 1 }],
    ['tags and meta', entry({ Tags: ['v2'], Meta: { zone: 'a' } }), { tags: ['v2'], meta: { zone: 'a' } }],
    ['an id unique across nodes', entry({}, { Node: 'n7' }), { id: 'n7/users-1' }],
  ])('uses %s', (_case, input, expected) => {
    expect(toInstances([input])[0]).toMatchObject(expected)
  })
})

describe('nextIndex', () => {
  it.each([
    [0, 12, 12],
    [12, 15, 15],
    [15, 15, 15],
    [15, 3, 0], // went backwards: start over
    [0, 0, 1], // below 1: treat as 1 so the next query blocks
  ])('after %i, an answer with index %i sends %i', (previous, received, next) => {
    expect(nextIndex(previous, received)).toBe(next)
  })
})

describe('routeSourceFromMeta', () => {
  it('turns portico-* meta into a route of the service', () => {
    const source = routeSourceFromMeta('users', [{ version: '1' }, { 'portico-prefix': '/api/users', 'portico-rewrite-prefix': '/', 'portico-websocket': 'true' }])
    expect(source?.source).toBe('consul:users')
    expect(JSON.parse(source?.text ?? '{}')).toEqual({ routes: [{ name: 'users', prefix: '/api/users', service: 'users', rewritePrefix: '/', websocket: true }] })
  })

  it('publishes nothing without portico-prefix', () => {
    expect(routeSourceFromMeta('users', [{ version: '2' }])).toBeUndefined()
  })
})
