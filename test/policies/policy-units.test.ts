import { describe, expect, it } from 'vitest'
import type { Instance } from '../../src/balancer/instance.js'
import { OutlierDetector } from '../../src/policies/outlier-detection/outlier-detection.js'
import { RetryBudget } from '../../src/policies/retry/retry-budget.js'
import { parseRouteFile } from '../../src/config/parse-route-file.js'

const route = (policy: string) => `routes:\n  - name: r\n    prefix: /r\n    service: s\n${policy}`

describe('policy keys in route files', () => {
  it.each([
    ['rateLimit: { limits: [{ limit: 5, window: 500ms }] }', /rateLimit window of 500 ms must be whole seconds/],
    ['rateLimit: { limits: [] }', /rateLimit\.limits: must NOT have fewer than 1 items/],
    ['rateLimit: { key: user, limits: [{ limit: 1, window: 1s }] }', /"user" must be "ip", "route", "consumer" or "header:<Header-Name>"/],
    ['rateLimit: { onRedisDown: fail, limits: [{ limit: 1, window: 1s }] }', /"fail" must be one of "local", "open", "closed"/],
    ['circuitBreaker: { errorThreshold: 50 }', /unknown key "errorThreshold"/],
    ['retry: { attempts: 0 }', /retry\.attempts: must be >= 1/],
    ['outlierDetection: { maxEjectionPercent: 150 }', /maxEjectionPercent: must be <= 100/],
    ['auth: {}', /auth needs at least one of "apiKey", "jwt" and "forward"/],
    ['auth: { apiKey: { in: cookie:k } }', /"cookie:k" must be "header:<Header-Name>" or "query:<parameter>"/],
    ['auth: { jwt: { issuer: x, jwksUri: "http://a/j", algorithms: [none] } }', /algorithms\[0\]: "none" must be one of "RS256"/],
    ['auth: { jwt: { issuer: x, jwksUri: "http://a/j", algorithms: [RS256, HS256] } }', /HS256 need "secretEnv" \(a public key or JWKS is never used as an HMAC secret\)/],
    ['auth: { jwt: { issuer: x, secretEnv: PORTICO_NO_SUCH_SECRET, algorithms: [HS256, RS256] } }', /takes HS256, HS384 or HS512 only/],
    ['auth: { jwt: { issuer: x, secretEnv: PORTICO_NO_SUCH_SECRET, algorithms: [HS256] } }', /PORTICO_NO_SUCH_SECRET is not set/],
    ['auth: { jwt: { issuer: x, publicKeyFile: /no/such.pem, algorithms: [RS256] } }', /publicKeyFile \/no\/such\.pem: ENOENT/],
    ['auth: { jwt: { issuer: x, jwksUri: "http://a/j", publicKeyFile: /k.pem, algorithms: [RS256] } }', /exactly one of "jwksUri", "publicKeyFile" and "secretEnv"/],
    ['auth: { jwt: { issuer: x, algorithms: [RS256] } }', /exactly one of "jwksUri", "publicKeyFile" and "secretEnv"/],
    ['auth: { forward: { url: "http://a", onError: maybe } }', /"maybe" must be one of "deny", "allow"/],
  ])('refuses %s', (policy, message) => {
    const { errors } = parseRouteFile('p.yaml', route(`    ${policy}\n`))
    expect(errors.map((e) => e.message).join('\n')).toMatch(message)
  })

  it('applies the documented defaults', () => {
    const { routes, errors } = parseRouteFile('p.yaml', route('    rateLimit: { limits: [{ limit: 5, window: 1m }] }\n    circuitBreaker: {}\n    retry: {}\n    outlierDetection: {}\n'))
    expect(errors).toEqual([])
    const policies = routes[0]?.policies
    expect(policies?.get('rateLimit')).toEqual({ key: { kind: 'ip' }, limits: [{ limit: 5, windowMs: 60_000 }], onRedisDown: 'local' })
    expect(policies?.get('circuitBreaker')).toMatchObject({ errorThresholdPercentage: 50, volumeThreshold: 20, windowMs: 10_000, resetTimeoutMs: 30_000, failureStatuses: new Set([500, 502, 503, 504]) })
    expect(policies?.get('retry')).toMatchObject({ attempts: 2, onConnectError: true, onTimeout: false, onStatuses: new Set([502, 503]), budgetPercent: 20, deadlineMs: 30_000 })
    expect((policies?.get('retry') as { methods: Set<string> }).methods).toEqual(new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE']))
    expect(policies?.get('outlierDetection')).toEqual({ consecutiveFailures: 5, baseEjectionMs: 30_000, maxEjectionPercent: 50 })
  })
})

describe('RetryBudget', () => {
  it('allows a few retries, then a share of recent requests', () => {
    let now = 0
    const budget = new RetryBudget(10, { windowMs: 1_000, minimum: 2, now: () => now })
    for (let i = 0; i < 20; i++) budget.recordRequest()
    const granted = Array.from({ length: 10 }, () => budget.tryRetry()).filter(Boolean).length
    expect(granted).toBe(4) // 2 + 10 % of 20
    now = 2_500 // two windows later everything has aged out
    expect(budget.tryRetry()).toBe(true)
  })
})

describe('OutlierDetector', () => {
  const instance = (id: string): Instance => ({ id, origin: `http://${id}`, weight: 1, tags: [], meta: {} })
  const all = [instance('a'), instance('b'), instance('c'), instance('d')]

  it('ejects after consecutive failures, for longer each time, and re-admits', () => {
    let now = 0
    const detector = new OutlierDetector({ consecutiveFailures: 2, baseEjectionMs: 100, maxEjectionPercent: 50 }, undefined, () => now)
    detector.record('a', false, 4)
    expect(detector.admitted(all)).toHaveLength(4)
    detector.record('a', false, 4)
    expect(detector.admitted(all).map((i) => i.id)).toEqual(['b', 'c', 'd'])
    now = 101
    expect(detector.admitted(all)).toHaveLength(4)
    detector.record('a', false, 4)
    detector.record('a', false, 4)
    now = 250 // second ejection lasts 200 ms
    expect(detector.admitted(all).map((i) => i.id)).not.toContain('a')
    now = 302
    expect(detector.admitted(all)).toHaveLength(4)
  })

  it('a success resets the count, and no more than the set share is ever ejected', () => {
    const detector = new OutlierDetector({ consecutiveFailures: 2, baseEjectionMs: 1_000, maxEjectionPercent: 50 }, undefined, () => 0)
    detector.record('a', false, 4)
    detector.record('a', true, 4)
    detector.record('a', false, 4)
    expect(detector.ejected()).toEqual([])
    for (const id of ['a', 'b', 'c']) for (let i = 0; i < 2; i++) detector.record(id, false, 4)
    expect(detector.ejected()).toEqual(['a', 'b'])
  })
})
