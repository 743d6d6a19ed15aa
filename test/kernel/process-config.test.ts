import { describe, expect, it } from 'vitest'
import { ConfigError, loadConfig, parseAdminTokens } from '../../src/kernel/process-config.js'

describe('admin tokens', () => {
  // Each of these could be set, yet no `Authorization: Bearer …` header can carry it (or it is guessable): refused at
  // start-up instead of locking the operator out at the first request.
  it.each([
    ['a space inside', 'ops token 1234'],
    ['a tab inside', 'ops\ttoken-1234'],
    ['a control character', 'ops-token-1234\u0007'],
    ['a non-ASCII character', 'ops-tökén-1234'],
    ['fewer than 8 characters', 'short'],
  ])('refuses PORTICO_ADMIN_TOKEN with %s', (_what, token) => {
    expect(() => loadConfig({}, { PORTICO_ADMIN_TOKEN: token })).toThrow(ConfigError)
  })

  it('takes a token of visible characters, and names the variable when it refuses one', () => {
    expect(loadConfig({}, { PORTICO_ADMIN_TOKEN: 'ops-token_1234+/=' }).adminToken).toBe('ops-token_1234+/=')
    expect(() => loadConfig({}, { PORTICO_ADMIN_TOKEN: 'two words here' })).toThrow(/^PORTICO_ADMIN_TOKEN: .*without spaces/)
  })

  it('refuses a tokens-file line whose token holds whitespace, naming the file and line', () => {
    expect(parseAdminTokens('# ops\nops:ops-token-1234\n', 'tokens')).toEqual([{ name: 'ops', token: 'ops-token-1234' }])
    expect(() => parseAdminTokens('ops:ops-token-1234\nci:ci token 5678\n', 'tokens')).toThrow(/^tokens:2: .*without spaces/)
    expect(() => parseAdminTokens('no-colon-here\n', 'tokens')).toThrow(/^tokens:1: expected name:token/)
  })
})

describe('TLS settings', () => {
  it('takes one pair or a directory, HTTP/2 on by default with TLS', () => {
    const pair = loadConfig({ 'tls-cert': 'c.pem', 'tls-key': 'k.pem' }, {})
    expect(pair.tls?.source).toEqual({ certFile: expect.stringMatching(/\/c\.pem$/), keyFile: expect.stringMatching(/\/k\.pem$/) })
    expect(pair.tls?.http2).toBe(true)
    expect(loadConfig({}, { PORTICO_TLS_DIR: '/tls', PORTICO_HTTP2: 'false', PORTICO_REDIRECT_PORT: '80' })).toMatchObject({ tls: { source: { dir: '/tls' }, http2: false }, redirectPort: 80 })
    expect(loadConfig({}, {}).tls).toBeUndefined()
  })

  it('refuses settings that cannot work together, saying which', () => {
    expect(() => loadConfig({ 'tls-cert': 'c.pem' }, {})).toThrow(/--tls-cert needs --tls-key too/)
    expect(() => loadConfig({}, { PORTICO_TLS_KEY: 'k.pem' })).toThrow(/--tls-key needs --tls-cert too/)
    expect(() => loadConfig({ 'tls-cert': 'c', 'tls-key': 'k', 'tls-dir': 'd' }, {})).toThrow(/use one/)
    expect(() => loadConfig({ 'tls-dir': 'd', http2: 'yes' }, {})).toThrow(/--http2: "yes" is not true or false/)
    expect(() => loadConfig({ 'redirect-port': '80' }, {})).toThrow(/--redirect-port needs TLS/)
    expect(() => loadConfig({ 'tls-dir': 'd', 'redirect-port': '99999' }, {})).toThrow(/--redirect-port: "99999" is not a port/)
  })
})
