import { describe, expect, it } from 'vitest'
import { normalizePath } from '../../src/proxy/normalize-path.js'
import { parseRouteFile, type RouteDefinition } from '../../src/config/parse-route-file.js'
import { clientPathOf, RouteTable } from '../../src/config/route-table.js'

const define = (prefix: string, rewritePrefix?: string): RouteDefinition => {
  const { routes, errors } = parseRouteFile('t.yaml', `routes:\n  - name: r${prefix.replaceAll('/', '-')}\n    prefix: ${prefix}\n    service: s\n${rewritePrefix ? `    rewritePrefix: ${rewritePrefix}\n` : ''}`)
  if (errors.length > 0 || !routes[0]) throw new Error(JSON.stringify(errors))
  return routes[0]
}

describe('RouteTable', () => {
  const table = new RouteTable([define('/'), define('/api'), define('/api/users'), define('/api/users/admin', '/internal'), define('/v2', '/')])

  it.each([
    ['/', '/', '/'],
    ['/x', '/', '/x'],
    ['/api', '/api', '/api'],
    ['/apix', '/', '/apix'],
    ['/api/', '/api', '/api/'],
    ['/api/users', '/api/users', '/api/users'],
    ['/api/usersX', '/api', '/api/usersX'],
    ['/api/users/7/orders', '/api/users', '/api/users/7/orders'],
    ['/api/users/admin', '/api/users/admin', '/internal'],
    ['/api/users/admin/', '/api/users/admin', '/internal/'],
    ['/api/users/admin/keys', '/api/users/admin', '/internal/keys'],
    ['/v2', '/v2', '/'],
    ['/v2/a', '/v2', '/a'],
  ])('matches %s to %s and forwards %s', (path, prefix, upstreamPath) => {
    const match = table.match(path)
    expect(match?.route.prefix).toBe(prefix)
    expect(match?.upstreamPath).toBe(upstreamPath)
  })

  it('matches nothing without a root route', () => {
    expect(new RouteTable([define('/a')]).match('/b')).toBeUndefined()
  })
})

describe('normalizePath', () => {
  it.each([
    ['/a/b', '/a/b'],
    ['/a/../b', '/b'],
    ['/a/%2e%2e/b', '/b'],
    ['/a/%2E%2E/b', '/b'],
    ['/a%2f..%2fb', '/b'],
    ['/a%2Fb', '/a/b'],
    ['//a//b/', '/a/b/'],
    ['/a/./b/.', '/a/b/'],
    ['/..', '/'],
    ['/../../etc/passwd', '/etc/passwd'],
    ['/a\\..\\b', '/b'],
    ['/a%5c..%5cb', '/b'],
    ['/users/caf%C3%A9', '/users/caf%C3%A9'],
    ['/a/%252e%252e/b', '/a/%252e%252e/b'],
  ])('turns %s into %s', (raw, normalised) => {
    expect(normalizePath(raw)).toBe(normalised)
  })

  it.each([['/a/%00'], ['/a/%zz'], ['a/b'], ['*']])('refuses %s', (raw) => {
    expect(normalizePath(raw)).toBeUndefined()
  })
})

describe('clientPathOf (Location rewrite)', () => {
  const route = (prefix: string, rewritePrefix?: string) => ({ prefix, rewritePrefix }) as RouteDefinition
  it.each([
    ['/api/users', '/', '/7', '/api/users/7'],
    ['/api/users', '/', '/', '/api/users/'],
    ['/api/users', '/v1', '/v1/7', '/api/users/7'],
    ['/api/users', '/v1', '/v1', '/api/users'],
    ['/api/users', '/v1', '/v2/7', '/v2/7'],
    ['/api/users', '/v1/', '/v1/7', '/api/users/7'],
    ['/', '/v1', '/v1/7', '/7'],
    ['/api', undefined, '/elsewhere', '/elsewhere'],
  ])('prefix %s rewritten to %s: upstream %s is the client\'s %s', (prefix, rewritePrefix, upstream, client) => {
    expect(clientPathOf(upstream, route(prefix, rewritePrefix))).toBe(client)
  })
})

describe('RouteTable: hosts, headers and methods', () => {
  const file = (routes: string) => parseRouteFile('m.yaml', `routes:\n${routes}`)
  const conditioned = file(
    [
      '  - { name: any, prefix: /api, service: s }',
      '  - { name: example, prefix: /api, service: s, hosts: [api.example.com] }',
      '  - { name: org, prefix: /api, service: s, hosts: ["*.example.org"] }',
      '  - { name: v2, prefix: /api, service: s, hosts: [api.example.com], headers: { X-Version: "2" } }',
      '  - { name: writes, prefix: /api/items, service: s, hosts: [api.example.com], methods: [POST] }',
    ].join('\n'),
  )
  const table = new RouteTable(conditioned.routes)
  const name = (path: string, headers: Record<string, string>, method = 'GET') => table.match(path, { method, headers })?.route.name

  it('parses conditioned routes at one prefix', () => expect(conditioned.errors).toEqual([]))

  it.each([
    ['/api/x', { host: 'api.example.com' }, 'GET', 'example'],
    ['/api/x', { host: 'API.Example.com:8443' }, 'GET', 'example'],
    ['/api/x', { host: 'api.example.com', 'x-version': '2' }, 'GET', 'v2'],
    ['/api/x', { host: 'api.example.com', 'x-version': '3' }, 'GET', 'example'],
    ['/api/x', { host: 'shop.example.org' }, 'GET', 'org'],
    ['/api/x', { host: 'a.shop.example.org' }, 'GET', 'any'],
    ['/api/x', { host: 'example.org' }, 'GET', 'any'],
    ['/api/x', { host: '[::1]:80' }, 'GET', 'any'],
    ['/api/x', {}, 'GET', 'any'],
    // the longest prefix among routes whose conditions match: the POST route's method takes it, a GET falls to /api
    ['/api/items/1', { host: 'api.example.com' }, 'POST', 'writes'],
    ['/api/items/1', { host: 'api.example.com' }, 'GET', 'example'],
  ])('%s with %j %s goes to %s', (path, headers, method, expected) => expect(name(path, headers, method)).toBe(expected))

  it('gives the route that matched but for its method when no route takes the request (a 405, not a 404)', () => {
    const only = new RouteTable(file('  - { name: w, prefix: /w, service: s, methods: [POST] }').routes)
    expect(only.match('/w/1', { method: 'GET', headers: {} })?.route.name).toBe('w')
    expect(only.match('/x', { method: 'GET', headers: {} })).toBeUndefined()
    const hosted = new RouteTable(file('  - { name: h, prefix: /h, service: s, hosts: [a.example.com] }').routes)
    expect(hosted.match('/h', { method: 'GET', headers: { host: 'b.example.com' } })).toBeUndefined()
  })

  it.each([
    ['the same host', '  - { name: a, prefix: /p, service: s, hosts: [x.example.com] }\n  - { name: b, prefix: /p, service: s, hosts: [x.example.com, y.example.com] }'],
    ['a wildcard covering a host', '  - { name: a, prefix: /p, service: s, hosts: ["*.example.com"] }\n  - { name: b, prefix: /p, service: s, hosts: [x.example.com] }'],
    ['a host and a header', '  - { name: a, prefix: /p, service: s, hosts: [x.example.com] }\n  - { name: b, prefix: /p, service: s, headers: { X-V: "1" } }'],
    ['overlapping methods', '  - { name: a, prefix: /p, service: s, methods: [GET, POST] }\n  - { name: b, prefix: /p, service: s, methods: [POST] }'],
  ])('refuses two routes that could take the same request with as many conditions: %s', (_what, routes) => {
    const { errors } = file(routes)
    expect(errors.map((e) => e.message)).toEqual([expect.stringMatching(/^route "b" could take the same requests as "a" at line 2 \(prefix "\/p"/)])
  })

  it.each([
    ['other hosts', '  - { name: a, prefix: /p, service: s, hosts: [x.example.com] }\n  - { name: b, prefix: /p, service: s, hosts: [y.example.com] }'],
    ['a wildcard one label deep only', '  - { name: a, prefix: /p, service: s, hosts: ["*.example.com"] }\n  - { name: b, prefix: /p, service: s, hosts: [a.b.example.com] }'],
    ['another header value', '  - { name: a, prefix: /p, service: s, headers: { X-V: "1" } }\n  - { name: b, prefix: /p, service: s, headers: { X-V: "2" } }'],
    ['other methods', '  - { name: a, prefix: /p, service: s, methods: [GET] }\n  - { name: b, prefix: /p, service: s, methods: [POST] }'],
    ['more conditions', '  - { name: a, prefix: /p, service: s }\n  - { name: b, prefix: /p, service: s, hosts: [x.example.com] }'],
  ])('takes two routes of one prefix that cannot take the same request, or differ in conditions: %s', (_what, routes) => {
    expect(file(routes).errors).toEqual([])
  })
})
