import type { Browser, Page } from 'playwright-core'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { launchChromium } from '../support/browser.js'
import { startGateway, type TestGateway } from '../support/gateway.js'
import { startUpstream, type Upstream } from '../support/upstream.js'

const TOKEN = 'console-token-4242'

describe('the status page in a real browser (headless Chromium)', () => {
  let upstream: Upstream
  let gateway: TestGateway
  let browser: Browser
  let page: Page
  beforeAll(async () => {
    upstream = await startUpstream('catalog')
    gateway = await startGateway(
      {
        'r.yaml': `routes:
  - name: catalog
    prefix: /catalog
    upstreams: [${upstream.url}]
    rateLimit: { key: route, limit: 1000, window: 1m }
    circuitBreaker: { volumeThreshold: 50 }
  - name: search
    prefix: /search
    upstreams: [${upstream.url}]
    cache: { ttl: 1m }
`,
        'consumers.yaml': 'consumers:\n  - name: acme\n    groups: [partners]\n    apiKeys: [sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08]\n',
      },
      {},
      { PORTICO_ADMIN_TOKEN: TOKEN },
    )
    browser = await launchChromium()
    page = await browser.newPage({ viewport: { width: 1400, height: 700 } })
  })
  afterAll(async () => {
    await browser?.close()
    await gateway?.close()
    await upstream?.close()
  })

  const breakerOf = (route: string) => page.locator(`tr[data-route="${route}"] td[data-breaker]`)

  it('asks for the token once, then lists the routes live', async () => {
    await page.goto(gateway.adminUrl)
    await page.locator('#token').fill(TOKEN)
    await page.getByRole('button', { name: 'Connect' }).click()
    await expect.poll(() => page.locator('#routes tbody tr').count(), { timeout: 5_000 }).toBe(2)
    expect(await page.locator('tr[data-route="catalog"] td').nth(1).textContent()).toBe('/catalog')
    expect(await breakerOf('catalog').getAttribute('data-breaker')).toBe('closed')
    expect(await page.locator('#fleet tbody tr').count()).toBe(1)
    // traffic shows up as a rate once two snapshots have seen it
    for (let i = 0; i < 20; i++) await (await request(`${gateway.url}/catalog`)).body.dump()
    await expect.poll(async () => page.locator('tr[data-route="catalog"] td[data-rate="requests"]').textContent(), { timeout: 5_000 }).toMatch(/^\d+\.\d$/)
  })

  it('shows what a route\'s cache answers', async () => {
    for (let i = 0; i < 4; i++) await (await request(`${gateway.url}/search/q`)).body.dump()
    const cell = page.locator('tr[data-route="search"] td[data-cache]')
    await expect.poll(() => cell.textContent(), { timeout: 5_000 }).toMatch(/^75% hits of 4 · 0\.0 MB \(memory\)$/)
    expect(await page.locator('tr[data-route="catalog"] td[data-cache]').textContent()).toBe('—')
  })

  it('shows a breaker turning open when the API forces it', async () => {
    const forced = await request(`${gateway.adminUrl}/admin/routes/catalog/breaker`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ state: 'open', reason: 'from the API' }),
    })
    expect(forced.statusCode).toBe(200)
    await forced.body.dump()
    await expect.poll(() => breakerOf('catalog').getAttribute('data-breaker'), { timeout: 5_000 }).toBe('open')
    expect(await breakerOf('catalog').textContent()).toContain('forced by admin: from the API')
    await page.screenshot({ path: process.env.CONSOLE_SCREENSHOT ?? '/tmp/portico-console.png' })
  })

  it('opens a breaker from the page, after a confirmation, for the gateway\'s clients too', async () => {
    const dialogs: string[] = []
    page.on('dialog', (dialog) => {
      dialogs.push(dialog.type())
      void dialog.accept(dialog.type() === 'prompt' ? 'opened from the page' : undefined)
    })
    expect((await request(`${gateway.url}/search`)).statusCode).toBe(200)
    await page.locator('tr[data-route="search"] button[data-action="open"]').click()
    await expect.poll(async () => (await request(`${gateway.url}/search`)).statusCode, { timeout: 5_000 }).toBe(503)
    expect(dialogs).toEqual(['confirm', 'prompt'])
    await expect.poll(() => breakerOf('search').getAttribute('data-breaker'), { timeout: 5_000 }).toBe('open')
    const audit = await request(`${gateway.adminUrl}/admin/audit`, { headers: { authorization: `Bearer ${TOKEN}` } })
    const { entries } = (await audit.body.json()) as { entries: { action: string; route: string; reason?: string }[] }
    expect(entries[0]).toMatchObject({ action: 'breaker open', route: 'search', reason: 'opened from the page' })
  })

  it('lists the consumers and revokes one from the page, fleet-wide and audited', async () => {
    const row = page.locator('tr[data-consumer="acme"]')
    await expect.poll(() => row.locator('td').nth(2).textContent(), { timeout: 5_000 }).toBe('1 key')
    expect(await row.locator('td').nth(1).textContent()).toBe('partners')
    await row.locator('button[data-action="revoke"]').click()
    await expect.poll(() => row.getAttribute('data-revoked'), { timeout: 5_000 }).toBe('true')
    const listed = await request(`${gateway.adminUrl}/admin/consumers`, { headers: { authorization: `Bearer ${TOKEN}` } }).then((r) => r.body.json() as Promise<{ consumers: { name: string; revoked: boolean }[] }>)
    expect(listed.consumers).toMatchObject([{ name: 'acme', revoked: true }])
  })
})
