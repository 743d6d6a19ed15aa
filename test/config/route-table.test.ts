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
