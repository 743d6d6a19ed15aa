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
    ['a split beside upstreams', route('    upstreams: [http://a:1]\n    split: [{ service: users, weight: 1 }]\n'), 2, /needs exactly one of "upstreams" \(a list of URLs\), "service" \(a Consul service name\) and "split"/],
    ['a split target without a name or service', route('    split:\n      - { service: users, weight: 90 }\n      - { upstreams: [http://a:1], weight: 10 }\n'), 2, /split\[1\]: needs a "name"/],
    ['two split targets of one name', route('    split:\n      - { service: users, weight: 90 }\n      - { upstreams: [http://a:1], weight: 10, name: users }\n'), 2, /split\[1\]: the target name "users" is used twice/],
    ['a split whose weights are all 0', route('    split:\n      - { service: users, weight: 0 }\n'), 2, /every weight is 0/],
    ['a split weight that is not a whole number', route('    split:\n      - { service: users, weight: 0.5 }\n'), 5, /split\[0\]\.weight: must be integer/],
    ['stickyOn without a split', route('    upstreams: [http://a:1]\n    stickyOn: ip\n'), 2, /"stickyOn" only applies with "split"/],
    ['an unknown stickyOn', route('    split: [{ service: users, weight: 1 }]\n    stickyOn: session\n'), 5, /stickyOn: "session" must be "ip", "consumer", "header:<Header-Name>" or "cookie:<name>"/],
    ['a mirror with no target', route('    upstreams: [http://a:1]\n    mirror: { percent: 5 }\n'), 2, /mirror: needs exactly one of "service" and "upstreams"/],
    ['a mirror percent over 100', route('    upstreams: [http://a:1]\n    mirror: { service: shadow, percent: 150 }\n'), 5, /mirror\.percent: must be <= 100/],
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

  it('reads a split: targets named after their service or by name, weights, and what keeps a client on one', () => {
    const { routes, errors } = parseRouteFile('x.yaml', route('    split:\n      - { service: users, weight: 90 }\n      - { upstreams: [http://10.0.0.9:9001/], weight: 10, name: canary }\n    stickyOn: cookie:session\n    mirror: { service: users-shadow, percent: 5 }\n'))
    expect(errors).toEqual([])
    expect(routes[0]).toMatchObject({
      targets: [
        { name: 'users', weight: 90, upstream: { kind: 'service', service: 'users' } },
        { name: 'canary', weight: 10, upstream: { kind: 'static', upstreams: ['http://10.0.0.9:9001'] } },
      ],
      split: { stickyOn: { kind: 'cookie', cookie: 'session' } },
    })
    expect(routes[0]?.policies.get('mirror')).toEqual({ source: { kind: 'service', service: 'users-shadow' }, percent: 5, maxInFlight: 100, timeoutMs: undefined })
    expect(parseRouteFile('x.yaml', route('    split: [{ service: users, weight: 1 }]\n    stickyOn: consumer\n')).routes[0]?.split).toEqual({ stickyOn: { kind: 'consumer' } })
  })

  it('applies defaults and normalises values', () => {
    const { routes, errors } = parseRouteFile('x.yaml', route('    upstreams: [http://a:1/, https://b:2]\n    loadBalancer: consistent-hash\n    hashOn: header:X-User\n    timeout: { connect: 250ms }\n'))
    expect(errors).toEqual([])
    expect(routes[0]).toMatchObject({
      name: 'r',
      prefix: '/r',
      targets: [{ name: '', weight: 1, upstream: { kind: 'static', upstreams: ['http://a:1', 'https://b:2'] } }],
      split: undefined,
      timeout: { connectMs: 250, responseMs: 30_000 },
      loadBalancer: 'consistent-hash',
      hashOn: { kind: 'header', header: 'x-user' },
      websocket: false,
      preserveHost: false,
      source: { file: 'x.yaml', line: 2 },
    })
  })
})
