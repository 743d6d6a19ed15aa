import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Browser } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { launchChromium } from '../support/browser.js'
import { startGateway, type TestGateway } from '../support/gateway.js'
import { answer } from '../support/http.js'
import { startUpstream, type Upstream } from '../support/upstream.js'


/**
 * The admin port without a token answers any request that names it by address, so a page on any site could make the
 * operator's browser change the fleet: a text/plain or form POST needs no CORS preflight.
 */
describe('admin changes from a page of another origin (headless Chromium)', () => {
  let upstream: Upstream
  let gateway: TestGateway
  let hostile: Server
  let hostileUrl: string
  let browser: Browser
  beforeAll(async () => {
    upstream = await startUpstream('victim')
    gateway = await startGateway({ 'r.yaml': `routes:\n  - name: victim\n    prefix: /victim\n    upstreams: [${upstream.url}]\n` })
    const eject = `${gateway.adminUrl}/admin/routes/victim/instances/${encodeURIComponent(upstream.url)}/eject`
    // The attacker's page: every way a page can POST without asking the admin port first.
    const page = `<!doctype html><body>
<form id="form" method="POST" action="${eject}" target="sink"><input name="reason" value="csrf"></form>
<iframe name="sink"></iframe>
<script>
  window.attempts = Promise.allSettled([
    fetch(${JSON.stringify(eject)}, { method: 'POST', mode: 'no-cors', body: 'x' }),
    fetch(${JSON.stringify(eject)}, { method: 'POST', mode: 'no-cors' }),
    fetch(${JSON.stringify(eject)}, { method: 'POST', mode: 'no-cors', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'reason=csrf' }),
    fetch(${JSON.stringify(eject)}, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }),
    new Promise((resolve) => { document.querySelector('iframe').onload = resolve; document.getElementById('form').submit() }),
  ])
</script></body>`
    hostile = createServer((_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end(page))
    await new Promise<void>((resolve) => hostile.listen(0, '127.0.0.1', resolve))
    hostileUrl = `http://127.0.0.1:${(hostile.address() as AddressInfo).port}/`
    browser = await launchChromium()
  })
  afterAll(async () => {
    await browser?.close()
    hostile?.close()
    await gateway?.close()
    await upstream?.close()
  })

  const ejected = async () => {
    const { text } = await answer(`${gateway.adminUrl}/admin/routes`)
    return (JSON.parse(text) as { routes: { name: string; operatorEjected?: Record<string, unknown> }[] }).routes.find((r) => r.name === 'victim')?.operatorEjected ?? {}
  }

  it('changes nothing when another origin\'s page posts to the admin port, whatever the body and its type', async () => {
    const page = await browser.newPage()
    await page.goto(hostileUrl)
    await page.evaluate(() => (window as unknown as { attempts: Promise<unknown> }).attempts)
    await page.close()
    expect(await ejected()).toEqual({})
    expect((await answer(`${gateway.url}/victim/x`)).status).toBe(200)
    const { text } = await answer(`${gateway.adminUrl}/admin/audit`)
    expect((JSON.parse(text) as { entries: unknown[] }).entries).toEqual([])
  })

  const post = (headers: Record<string, string>, body = '{}') =>
    answer(`${gateway.adminUrl}/admin/routes/victim/breaker`, { method: 'POST', headers, body: body.replace('{}', '{"state":"auto"}') })

  it.each([
    ['another origin', { 'content-type': 'application/json', origin: 'http://evil.example' }, 403, 'forbidden'],
    ['the null origin (a sandboxed frame)', { 'content-type': 'application/json', origin: 'null' }, 403, 'forbidden'],
    ['a cross-site fetch that sent no Origin', { 'content-type': 'application/json', 'sec-fetch-site': 'cross-site' }, 403, 'forbidden'],
    ['a text/plain body', { 'content-type': 'text/plain' }, 415, 'unsupported_media_type'],
    ['a form body', { 'content-type': 'application/x-www-form-urlencoded' }, 415, 'unsupported_media_type'],
  ])('refuses a change from %s', async (_case, headers, status, code) => {
    const refused = await post(headers)
    expect([refused.status, refused.code]).toEqual([status, code])
  })

  it('takes a change from a script (no Origin) and from the admin origin itself', async () => {
    expect((await post({ 'content-type': 'application/json' })).status).toBe(200)
    expect((await post({ 'content-type': 'application/json; charset=utf-8', origin: gateway.adminUrl, 'sec-fetch-site': 'same-origin' })).status).toBe(200)
  })
})
