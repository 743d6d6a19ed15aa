import { rm } from 'node:fs/promises'
import pino, { type Logger as Pino } from 'pino'
import { request } from 'undici'
import { afterEach, describe, expect, it } from 'vitest'
import { loadConfig } from '../../src/kernel/process-config.js'
import { RequestLogger } from '../../src/proxy/request-logger.js'
import { startPortico, type RunningPortico } from '../../src/server.js'
import { makeRoutesDir } from '../support/gateway.js'
import { waitFor } from '../support/poll.js'
import { startUpstream, type Upstream } from '../support/upstream.js'

/** A real pino logger writing into `lines`, counting the children built with a request id. */
function capturingLogger(level: string) {
  const lines: Record<string, unknown>[] = []
  const logger: Pino = pino({ level }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) })
  let requestChildren = 0
  const child = logger.child
  // A function of its `this`: pino's children inherit it, and a child's child must be built on that child.
  logger.child = function (this: Pino, bindings, options) {
    if ('requestId' in bindings) requestChildren++
    return child.call(this, bindings, options)
  } as Pino['child']
  return { logger, lines, requestChildren: () => requestChildren }
}

describe("fastify's request logger", () => {
  it('is a pino child with the request id and the route level, built on its first line', () => {
    const { logger, lines } = capturingLogger('info')
    const requestLog = new RequestLogger(logger, { requestId: 'req-1' }, { level: 'error' })
    expect(requestLog.level).toBe('error')
    requestLog.warn('below the route level')
    expect(lines).toEqual([])
    requestLog.error({ err: new Error('boom') }, 'unexpected gateway error')
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatchObject({ requestId: 'req-1', level: 50, msg: 'unexpected gateway error', err: { message: 'boom' } })
    requestLog.child({ part: 'tunnel' }).error('from a child')
    expect(lines[1]).toMatchObject({ requestId: 'req-1', part: 'tunnel', msg: 'from a child' })
    requestLog.level = 'warn'
    requestLog.warn('now at the level')
    expect(lines.map((l) => l.msg)).toEqual(['unexpected gateway error', 'from a child', 'now at the level'])
  })

  describe('in a running gateway', () => {
    let upstream: Upstream | undefined
    let portico: RunningPortico | undefined
    let routesDir: string | undefined
    afterEach(async () => {
      await portico?.shutdown()
      await upstream?.close()
      if (routesDir) await rm(routesDir, { recursive: true, force: true })
    })

    const serve = async (level: string) => {
      const captured = capturingLogger(level)
      upstream = await startUpstream('items')
      routesDir = await makeRoutesDir({ 'items.yaml': `routes:\n  - name: items\n    prefix: /items\n    upstreams: [${upstream.url}]\n` })
      const config = loadConfig({ routes: routesDir, port: '0', 'admin-port': '0', host: '127.0.0.1' }, { PORTICO_SHUTDOWN_DELAY: '0s', PORTICO_ACCESS_LOG: 'off', PORTICO_LOG_LEVEL: level })
      portico = await startPortico(config, captured.logger)
      return captured
    }

    it('builds no logger for a request that logs nothing', async () => {
      const { requestChildren } = await serve('info')
      for (let i = 0; i < 20; i++) {
        const response = await request(`${portico?.url}/items/${i}`)
        await response.body.text()
        expect(response.statusCode).toBe(200)
      }
      expect(requestChildren()).toBe(0)
    })

    it("writes fastify's request lines at debug, each with its request id", async () => {
      const { lines } = await serve('debug')
      const response = await request(`${portico?.url}/items/1`, { headers: { 'x-request-id': 'debug-line-1' } })
      await response.body.text()
      const ofRequest = await waitFor(() => {
        const found = lines.filter((l) => l.requestId === 'debug-line-1')
        return found.some((l) => l.msg === 'request completed') ? found : undefined
      })
      expect(ofRequest.map((l) => l.msg)).toEqual(expect.arrayContaining(['incoming request', 'request completed']))
      expect(ofRequest.find((l) => l.msg === 'request completed')).toMatchObject({ level: 30 })
    })
  })
})
