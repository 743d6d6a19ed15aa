import type { FastifyRequest } from 'fastify'
import { describe, expect, it } from 'vitest'
import { clientResponseHeaders } from '../../src/proxy/forwarding-headers.js'

describe('clientResponseHeaders', () => {
  const request = { id: 'req-1' } as FastifyRequest

  it('drops characters Node refuses in a header value, keeps obs-text and tabs, and adds the request id', () => {
    const headers = clientResponseHeaders(request, {
      'content-type': 'text/plain',
      'x-odd': 'a\u0001b\tc\u00e9',
      'set-cookie': ['a=1\u0000', 'b=2'],
      'keep-alive': 'timeout=5',
    })
    expect(headers).toEqual({ 'content-type': 'text/plain', 'x-odd': 'ab\tc\u00e9', 'set-cookie': ['a=1', 'b=2'], 'x-request-id': 'req-1' })
  })
})
