import { describe, expect, it } from 'vitest'
import { GatewayError, GatewayErrors, toProblem, type GatewayErrorCode } from '../../src/kernel/errors.js'

describe('the gateway error table', () => {
  it.each(Object.keys(GatewayErrors) as GatewayErrorCode[])('%s carries its status and derives its type from its code', (code) => {
    const error = new GatewayError(code, 'detail')
    const problem = toProblem(error, 'req-1', '/x')
    expect(problem.code).toBe(code)
    expect(problem.status).toBe(GatewayErrors[code].status)
    expect(problem.type).toBe(`https://portico.dev/problems/${code.replaceAll('_', '-')}`)
    expect(problem).toMatchObject({ title: GatewayErrors[code].title, detail: 'detail', instance: '/x', requestId: 'req-1' })
  })

  it('keeps the cause of a wrapped error', () => {
    const cause = new Error('ECONNREFUSED')
    expect(new GatewayError('upstream_unreachable', 'x', { cause }).cause).toBe(cause)
  })
})
