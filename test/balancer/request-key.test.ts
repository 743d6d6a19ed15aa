import { describe, expect, it } from 'vitest'
import { MAX_KEY_LENGTH, parseRequestKey, readRequestKey } from '../../src/balancer/request-key.js'

const request = (ip: string, headers: Record<string, string | string[]> = {}) => ({ ip, socket: { remoteAddress: '10.0.0.9' }, headers })

describe('request keys', () => {
  it.each([
    ['ip', request('203.0.113.7'), '203.0.113.7'],
    ['ip', request('2001:db8::1'), '2001:db8::1'],
    // what a trusted proxy forwarded counts only when it is an address
    ['ip', request('not-an-address'), '10.0.0.9'],
    ['ip', request('x'.repeat(8_000)), '10.0.0.9'],
    ['route', request('203.0.113.7'), '*'],
    ['header:X-Api-Key', request('203.0.113.7', { 'x-api-key': 'k1' }), 'h:k1'],
    ['header:X-Api-Key', request('203.0.113.7', { 'x-api-key': 'k1, k2' }), 'h:k1'],
    ['header:X-Api-Key', request('203.0.113.7', { 'x-api-key': ['k1', 'k2'] }), 'h:k1'],
    ['header:X-Api-Key', request('203.0.113.7'), 'ip:203.0.113.7'],
    ['header:X-Api-Key', request('203.0.113.7', { 'x-api-key': ' ' }), 'ip:203.0.113.7'],
  ])('%s of %j is %s', (key, req, expected) => {
    expect(readRequestKey(parseRequestKey(key), req)).toBe(expected)
  })

  it('hashes long header values, so no client makes the gateway keep kilobytes per key', () => {
    const key = readRequestKey(parseRequestKey('header:X-Api-Key'), request('203.0.113.7', { 'x-api-key': 'a'.repeat(8_192) }))
    expect(key.length).toBeLessThanOrEqual(MAX_KEY_LENGTH)
    expect(key).toBe(readRequestKey(parseRequestKey('header:X-Api-Key'), request('198.51.100.1', { 'x-api-key': 'a'.repeat(8_192) })))
    expect(key).not.toBe(readRequestKey(parseRequestKey('header:X-Api-Key'), request('203.0.113.7', { 'x-api-key': `${'a'.repeat(8_191)}b` })))
  })
})

describe('cookie keys', () => {
  it.each([
    ['session=abc', 'k:abc'],
    ['a=1; session=abc; b=2', 'k:abc'],
    ['session="abc"', 'k:abc'],
    ['Session=abc', 'ip:203.0.113.7'],
    ['session=', 'ip:203.0.113.7'],
    ['other=abc', 'ip:203.0.113.7'],
  ])('cookie:session of %j is %s', (cookie, expected) => {
    expect(readRequestKey(parseRequestKey('cookie:session'), request('203.0.113.7', { cookie }))).toBe(expected)
  })

  it('hashes long cookie values and keys a request without the cookie by its address', () => {
    const key = readRequestKey(parseRequestKey('cookie:session'), request('203.0.113.7', { cookie: `session=${'a'.repeat(4_000)}` }))
    expect(key.length).toBeLessThanOrEqual(MAX_KEY_LENGTH)
    expect(readRequestKey(parseRequestKey('cookie:session'), request('203.0.113.7'))).toBe('ip:203.0.113.7')
  })
})
