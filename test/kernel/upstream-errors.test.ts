import { describe, expect, it } from 'vitest'
import { BODY_TOO_LARGE, CLIENT_GONE, classifyUpstreamFailure, isClientFault, isConnectError, isResponseTimeout } from '../../src/kernel/upstream-errors.js'

const failure = (code: string, cause?: Error) => Object.assign(new Error(code, cause && { cause }), { code })
const timeout = { connectMs: 250, responseMs: 5_000 }

describe('classifyUpstreamFailure', () => {
  it.each([
    ['ECONNREFUSED', 'upstream_unreachable', 'http://a:1 could not be reached (ECONNREFUSED)'],
    ['UND_ERR_CONNECT_TIMEOUT', 'upstream_timeout', 'No connection to http://a:1 within 250 ms'],
    ['UND_ERR_HEADERS_TIMEOUT', 'upstream_timeout', 'No response from http://a:1 within 5000 ms'],
    ['FST_REPLY_FROM_GATEWAY_TIMEOUT', 'upstream_timeout', 'No response from http://a:1 within 5000 ms'],
    ['UND_ERR_RES_CONTENT_LENGTH_MISMATCH', 'upstream_bad_response', 'http://a:1 sent an invalid response'],
    [BODY_TOO_LARGE, 'payload_too_large', "The streamed body exceeded the gateway's limit; http://a:1 did not get it whole"],
  ])('%s → %s', (code, expected, detail) => {
    const error = classifyUpstreamFailure(failure('FST_REPLY_FROM_INTERNAL', failure(code)), 'http://a:1', timeout)
    expect(error.code).toBe(expected)
    expect(error.message).toBe(detail)
  })

  it('tells connect errors, response timeouts and client faults apart, through causes', () => {
    expect(isConnectError(failure('X', failure('ECONNRESET')))).toBe(true)
    expect(isConnectError(failure('UND_ERR_HEADERS_TIMEOUT'))).toBe(false)
    expect(isResponseTimeout(failure('UND_ERR_HEADERS_TIMEOUT'))).toBe(true)
    expect(isClientFault(failure(CLIENT_GONE))).toBe(true)
    expect(isClientFault(failure('X', failure(BODY_TOO_LARGE)))).toBe(true)
    expect(isClientFault(failure('ECONNREFUSED'))).toBe(false)
  })
})
