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
