import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startGateway, type TestGateway } from '../support/gateway.js'
import { waitFor } from '../support/poll.js'
import { startUpstream, type Upstream } from '../support/upstream.js'

describe('routes chosen by host, header and method, through the gateway', () => {
  let shop: Upstream
  let blog: Upstream
  let v2: Upstream
  let gateway: TestGateway
  beforeAll(async () => {
    ;[shop, blog, v2] = await Promise.all([startUpstream('shop'), startUpstream('blog'), startUpstream('v2')])
    gateway = await startGateway({
      'sites.yaml': `routes:
  - { name: shop, prefix: /api, upstreams: ["${shop.url}"], hosts: [shop.example.com] }
  - { name: blog, prefix: /api, upstreams: ["${blog.url}"], hosts: ["*.blog.example.com"], methods: [GET] }
  - { name: shop-v2, prefix: /api, upstreams: ["${v2.url}"], hosts: [shop.example.com], headers: { X-Version: "2" } }
`,
    })
  })
  afterAll(async () => {
    await gateway?.close()
    await Promise.all([shop?.close(), blog?.close(), v2?.close()])
  })

  const call = async (host: string, headers: Record<string, string> = {}, method = 'GET') => {
    const r = await request(`${gateway.url}/api/items`, { method, headers: { host, ...headers } })
    const text = await r.body.text()
    return { status: r.statusCode, upstream: r.statusCode === 200 ? (JSON.parse(text) as { upstream: string }).upstream : (JSON.parse(text) as { code: string }).code, allow: r.headers.allow }
  }

  it('serves two sites on one gateway by their host names, a header picking a version', async () => {
    expect(await call('shop.example.com')).toMatchObject({ status: 200, upstream: 'shop' })
    expect(await call('shop.example.com:8080', { 'x-version': '2' })).toMatchObject({ status: 200, upstream: 'v2' })
    expect(await call('en.blog.example.com')).toMatchObject({ status: 200, upstream: 'blog' })
    expect(await call('other.example.com')).toMatchObject({ status: 404, upstream: 'no_route' })
    expect(await call('en.blog.example.com', {}, 'POST')).toMatchObject({ status: 405, upstream: 'method_not_allowed', allow: 'GET' })
  })

  it('refuses a file whose route could take another file\'s requests, naming the other, while the table serves on', async () => {
    await gateway.writeRoutes('rival.yaml', `routes:\n  - { name: rival, prefix: /api, upstreams: ["${blog.url}"], hosts: [shop.example.com] }\n`)
    const refused = await waitFor(
      async () => {
        const body = (await request(`${gateway.adminUrl}/admin/routes`).then((r) => r.body.json())) as { errors: { text: string }[] }
        return body.errors.find((e) => e.text.includes('rival.yaml'))
      },
      { what: 'the rival file to be refused' },
    )
    expect(refused.text).toMatch(/rival\.yaml:2: route "rival" could take the same requests as "shop" at .*sites\.yaml:2/)
    expect(await call('shop.example.com')).toMatchObject({ status: 200, upstream: 'shop' })
  })
})
