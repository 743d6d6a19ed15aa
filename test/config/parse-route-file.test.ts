import { describe, expect, it } from 'vitest'
import { formatRouteFileError, parseRouteFile } from '../../src/config/parse-route-file.js'

const route = (extra: string) => `routes:\n  - name: r\n    prefix: /r\n${extra}`

describe('parseRouteFile', () => {
  it.each([
    ['a YAML syntax error', 'routes:\n  - name: a\n   prefix: /a\n', 3, /Sequence item without - indicator|bad indentation|All mapping items/i],
    ['an empty file', '', 1, /file is empty/],
    ['a misspelt routes key', 'route: []\n', 1, /unknown key "route" \(did you mean "routes"\?\); allowed: routes, consumers/],
    ['a typo in a key', route('    upstreams: [http://a:1]\n    websockets: true\n'), 5, /unknown key "websockets" \(did you mean "websocket"\?\)/],
    ['a prefix with a trailing slash', 'routes:\n  - name: r\n    prefix: /r/\n    upstreams: [http://a:1]\n', 3, /"\/r\/" must start with "\/", have no trailing slash/],
    ['an upstream with a path', route('    upstreams: [http://a:1/base]\n'), 4, /must be an origin such as/],
    ['a bad duration', route('    upstreams: [http://a:1]\n    timeout: { response: 5 sec }\n'), 5, /timeout\.response: "5 sec" must be a duration/],
    ['an unknown balancer', route('    upstreams: [http://a:1]\n    loadBalancer: fastest\n'), 5, /"fastest" must be one of "round-robin", "least-request", "random", "consistent-hash"/],
    ['both upstreams and service', route('    upstreams: [http://a:1]\n    service: users\n'), 2, /needs exactly one of "upstreams"/],
    ['neither upstreams nor service', route(''), 2, /needs exactly one of "upstreams"/],
    ['hashOn without consistent-hash', route('    upstreams: [http://a:1]\n    hashOn: ip\n'), 2, /"hashOn" only applies with "loadBalancer: consistent-hash"/],
    ['an unknown method', route('    upstreams: [http://a:1]\n    methods: [GET, FETCH]\n'), 5, /methods\[1\]: "FETCH" must be one of "GET"/],
    ['a duplicate key', 'routes:\n  - name: r\n    name: s\n    prefix: /r\n    upstreams: [http://a:1]\n', 3, /Map keys must be unique/],
    ['a missing prefix', 'routes:\n  - name: r\n    upstreams: [http://a:1]\n', 2, /missing required key "prefix"/],
  ])('reports %s at the line it is on', (_case, text, line, message) => {
    const { routes, errors } = parseRouteFile('routes/x.yaml', text)
    expect(routes).toEqual([])
    expect(errors[0]).toMatchObject({ file: 'routes/x.yaml', line })
    expect(errors[0]?.message).toMatch(message)
  })

  it('reports duplicate names and prefixes inside one file', () => {
    const { errors } = parseRouteFile('x.yaml', 'routes:\n  - name: a\n    prefix: /a\n    service: s\n  - name: a\n    prefix: /a\n    service: s\n')
    expect(errors.map(formatRouteFileError)).toEqual(['x.yaml:5: route name "a" is already used at line 2', 'x.yaml:5: prefix "/a" is already routed at line 2'])
  })

  it('applies defaults and normalises values', () => {
    const { routes, errors } = parseRouteFile('x.yaml', route('    upstreams: [http://a:1/, https://b:2]\n    loadBalancer: consistent-hash\n    hashOn: header:X-User\n    timeout: { connect: 250ms }\n'))
    expect(errors).toEqual([])
    expect(routes[0]).toMatchObject({
      name: 'r',
      prefix: '/r',
      target: { kind: 'static', upstreams: ['http://a:1', 'https://b:2'] },
      timeout: { connectMs: 250, responseMs: 30_000 },
      loadBalancer: 'consistent-hash',
      hashOn: { kind: 'header', header: 'x-user' },
      websocket: false,
      preserveHost: false,
      source: { file: 'x.yaml', line: 2 },
    })
  })
})
