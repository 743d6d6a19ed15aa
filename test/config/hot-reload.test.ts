import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startGateway, type TestGateway } from '../support/gateway.js'
import { timeUntil, waitFor } from '../support/poll.js'
import { startUpstream, type Upstream } from '../support/upstream.js'

const upstreamOf = async (url: string): Promise<string | number> => {
  const response = await request(url)
  const text = await response.body.text()
  return response.statusCode === 200 ? (JSON.parse(text) as { upstream: string }).upstream : response.statusCode
}

const routeFile = (name: string, prefix: string, upstream: string) => `routes:\n  - name: ${name}\n    prefix: ${prefix}\n    upstreams: [${upstream}]\n`

describe('hot reload of route files', () => {
  let blue: Upstream, green: Upstream
  let gateway: TestGateway
  beforeAll(async () => {
    blue = await startUpstream('blue')
    green = await startUpstream('green')
    gateway = await startGateway({ 'shop.yaml': routeFile('shop', '/shop', blue.url), 'other.yaml': routeFile('other', '/other', blue.url) })
  })
  afterAll(async () => {
    await gateway?.close()
    await Promise.all([blue?.close(), green?.close()])
  })

  const admin = async () => (await (await request(`${gateway.adminUrl}/admin/routes`)).body.json()) as {
    version: number
    routes: { name: string }[]
    errors: { file: string; line: number; message: string; text: string; kept: string }[]
  }

  it('applies an edit within a second, without a restart', async () => {
    expect(await upstreamOf(`${gateway.url}/shop`)).toBe('blue')
    await gateway.writeRoutes('shop.yaml', routeFile('shop', '/shop', green.url))
    const took = await timeUntil(async () => (await upstreamOf(`${gateway.url}/shop`)) === 'green', { timeoutMs: 3_000, what: 'the edit to apply' })
    expect(took).toBeLessThan(1_000)
  })

  it('refuses a bad edit: the last good version keeps serving and the error is shown as file:line on the admin port', async () => {
    await gateway.writeRoutes('shop.yaml', 'routes:\n  - name: shop\n    prefix: /shop\n    upstream: [http://127.0.0.1:1]\n')
    const report = await waitFor(async () => {
      const r = await admin()
      return r.errors.length > 0 ? r : undefined
    }, { what: 'the error to show on the admin port' })
    expect(report.errors[0]).toMatchObject({ line: 4, kept: 'last-good', message: expect.stringContaining('unknown key "upstream" (did you mean "upstreams"?)') })
    expect(report.errors[0]?.text).toMatch(/shop\.yaml:4: routes\[0\]: unknown key "upstream"/)
    expect(await upstreamOf(`${gateway.url}/shop`)).toBe('green')
    // the bad file blocks only itself
    await gateway.writeRoutes('other.yaml', routeFile('other', '/other', green.url))
    await waitFor(async () => (await upstreamOf(`${gateway.url}/other`)) === 'green', { what: 'the other file to apply' })
    const ready = await request(`${gateway.adminUrl}/readyz`)
    expect(ready.statusCode).toBe(200)
    expect(((await ready.body.json()) as { components: { routes: { refused: string[] } } }).components.routes.refused).toEqual([expect.stringContaining('shop.yaml')])
  })

  it('applies the file once it is fixed', async () => {
    await gateway.writeRoutes('shop.yaml', routeFile('shop', '/shop', blue.url))
    await waitFor(async () => (await upstreamOf(`${gateway.url}/shop`)) === 'blue', { what: 'the fix to apply' })
    expect((await admin()).errors).toEqual([])
  })

  it('adds and removes routes with their files', async () => {
    await gateway.writeRoutes('new.yml', routeFile('fresh', '/fresh', green.url))
    await waitFor(async () => (await upstreamOf(`${gateway.url}/fresh`)) === 'green', { what: 'the new file to apply' })
    await gateway.removeRoutes('new.yml')
    await waitFor(async () => (await upstreamOf(`${gateway.url}/fresh`)) === 404, { what: 'the removed file to disappear' })
  })

  it('refuses a new file that takes a prefix another file already serves', async () => {
    await gateway.writeRoutes('zz-thief.yaml', routeFile('thief', '/shop', green.url))
    const report = await waitFor(async () => {
      const r = await admin()
      return r.errors.find((e) => e.file.includes('zz-thief')) ? r : undefined
    }, { what: 'the conflict to show' })
    expect(report.errors[0]?.message).toMatch(/prefix "\/shop" is already routed by "shop" at .*shop\.yaml:2/)
    expect(await upstreamOf(`${gateway.url}/shop`)).toBe('blue')
    await gateway.removeRoutes('zz-thief.yaml')
  })

  it('fails no in-flight or concurrent request while the table is swapped under load', async () => {
    const deadline = Date.now() + 3_000
    const statuses: number[] = []
    let swaps = 0
    const load = Array.from({ length: 8 }, async () => {
      for (let i = 0; i < 150 && Date.now() < deadline; i++) {
        const response = await request(`${gateway.url}/shop/item`)
        await response.body.dump()
        statuses.push(response.statusCode)
      }
    })
    const flipper = (async () => {
      for (let i = 0; i < 10 && Date.now() < deadline; i++) {
        await gateway.writeRoutes('shop.yaml', routeFile('shop', '/shop', i % 2 === 0 ? green.url : blue.url))
        const target = i % 2 === 0 ? 'green' : 'blue'
        await waitFor(async () => (await upstreamOf(`${gateway.url}/shop`)) === target, { what: `swap ${i}` })
        swaps++
      }
    })()
    await Promise.all([...load, flipper])
    expect(swaps).toBeGreaterThanOrEqual(3)
    expect(statuses.length).toBeGreaterThan(100)
    expect(statuses.filter((s) => s !== 200)).toEqual([])
  })
})
