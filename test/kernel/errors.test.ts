import { readFileSync } from 'node:fs'
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

  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')
  it.each(Object.keys(GatewayErrors) as GatewayErrorCode[])('README documents %s with its status', (code) => {
    const row = readme.split('\n').find((line) => line.startsWith(`| \`${code}\` |`))
    expect(row).toContain(`| ${GatewayErrors[code].status} |`)
  })

  it.each((Object.keys(GatewayErrors) as GatewayErrorCode[]).filter((code) => GatewayErrors[code].status === 503))('%s (503) carries Retry-After', (code) => {
    expect(new GatewayError(code, 'detail').headers['retry-after']).toBe('1')
    expect(new GatewayError(code, 'detail', { headers: { 'retry-after': '30' } }).headers['retry-after']).toBe('30')
  })
})
