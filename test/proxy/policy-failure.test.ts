import { request } from 'undici'
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import { deliver } from '../../src/proxy/send.js'
import { startGateway, type TestGateway } from '../support/gateway.js'
import { freePort } from '../support/ports.js'
import { startUpstream, type Upstream } from '../support/upstream.js'

/**
 * Attempt handlers (the policies' and the chain's end) run in undici's and timers' callbacks, where a throw would be
 * an uncaught exception: a replica down for one request. A handler that throws fails its own request with a 500.
 * The chain's end stands in for a policy with a bug (vitest fails the run on an uncaught exception).
 */
describe('an attempt handler that throws', () => {
  let upstream: Upstream
  let gateway: TestGateway
  beforeAll(async () => {
    upstream = await startUpstream('a', (_req, res) => void res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': 'a' }).end('{"upstream":"a"}'))
    const closedPort = await freePort()
    gateway = await startGateway({
      'r.yaml': `routes:
  - name: live
    prefix: /live
    upstreams: [${upstream.url}]
  - name: dead
    prefix: /dead
    upstreams: [http://127.0.0.1:${closedPort}]
`,
    })
  })
  afterAll(async () => {
    await gateway?.close()
    await upstream?.close()
  })
  afterEach(() => void vi.restoreAllMocks())

  it('on an upstream answer: that request gets a 500 problem, not the upstream\'s headers, and the gateway serves on', async () => {
    vi.spyOn(deliver, 'onResponse').mockImplementationOnce(() => {
      throw new Error('a policy bug')
    })
    const failed = await request(`${gateway.url}/live/x`)
    const problem = (await failed.body.json()) as { code: string }
    expect(failed.statusCode).toBe(500)
    expect(String(failed.headers['content-type'])).toMatch(/^application\/problem\+json/)
    expect(failed.headers['x-upstream']).toBeUndefined()
    expect(problem.code).toBe('internal')

    const next = await request(`${gateway.url}/live/y`)
    await next.body.dump()
    expect(next.statusCode).toBe(200)
  })

  it('on an upstream failure: the same', async () => {
    vi.spyOn(deliver, 'onError').mockImplementationOnce(() => {
      throw new Error('a policy bug')
    })
    const failed = await request(`${gateway.url}/dead/x`)
    expect(failed.statusCode).toBe(500)
    expect(((await failed.body.json()) as { code: string }).code).toBe('internal')

    const next = await request(`${gateway.url}/dead/y`)
    await next.body.dump()
    expect(next.statusCode).toBe(502)
  })
})
