import type { Browser, Page } from 'playwright-core'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { launchChromium } from '../support/browser.js'
import { startGateway, type TestGateway } from '../support/gateway.js'
import { windowTotal } from '../support/history.js'
import { waitFor } from '../support/poll.js'
import { startUpstream, type Upstream } from '../support/upstream.js'

const TOKEN = 'charts-token-4242'
const auth = { authorization: `Bearer ${TOKEN}` }

interface RouteHistory {
  times: number[]
  requests: (number | null)[]
  serverErrors: (number | null)[]
  marks: { kind: string; text: string }[]
}

describe('the status page\'s charts in a real browser (headless Chromium)', () => {
  let upstream: Upstream
  let gateway: TestGateway
  let browser: Browser
  let page: Page
  let failing = false
  const problems: string[] = []

  beforeAll(async () => {
    upstream = await startUpstream('catalog', (_req, res) => {
      res.writeHead(failing ? 500 : 200, { 'content-type': 'text/plain' })
      res.end(failing ? 'broken' : 'ok')
    })
    gateway = await startGateway(
      {
        'r.yaml': `routes:
  - name: catalog
    prefix: /catalog
    upstreams: [${upstream.url}]
    circuitBreaker: { volumeThreshold: 10, errorThresholdPercentage: 50, resetTimeout: 5m }
  - name: quiet
    prefix: /quiet
    upstreams: [${upstream.url}]
  - name: keyed
    prefix: /keyed
    upstreams: [${upstream.url}]
    auth: { apiKey: {} }
`,
        'consumers.yaml': 'consumers:\n  - name: acme\n    apiKeys: [sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08]\n',
      },
      {},
      { PORTICO_ADMIN_TOKEN: TOKEN },
    )
    browser = await launchChromium()
    page = await browser.newPage({ viewport: { width: 1280, height: 800 } })
    watchProblems(page)
  })
  afterAll(async () => {
    await browser?.close()
    await gateway?.close()
    await upstream?.close()
  })

  /** What a page's script or its content policy refuse (the 401 before the token is given is the login's cue, not one). */
  const watchProblems = (on: Page) => {
    on.on('console', (message) => {
      if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) problems.push(message.text())
    })
    on.on('pageerror', (error) => problems.push(error.message))
  }
  const historyOf = async (route: string): Promise<RouteHistory> => {
    const response = await request(`${gateway.adminUrl}/admin/routes/${route}/history`, { headers: auth })
    expect(response.statusCode).toBe(200)
    return (await response.body.json()) as RouteHistory
  }
  const send = async (count: number) => {
    for (let i = 0; i < count; i++) await (await request(`${gateway.url}/catalog/items`)).body.dump()
  }
  /** What the page's chart of `id` draws: uPlot's data, x first. */
  const chartData = (id: string) => page.evaluate((chart) => (document.querySelector(`#chart-${chart}`) as (Element & { uplot?: { data: (number | null)[][] } }) | null)?.uplot?.data ?? null, id)

  it('draws a route\'s error rise and marks its breaker opening, live', async () => {
    await page.goto(gateway.adminUrl)
    await page.locator('#token').fill(TOKEN)
    await page.getByRole('button', { name: 'Connect' }).click()
    await expect.poll(() => page.locator('#routes tbody tr').count(), { timeout: 5_000 }).toBe(3)

    // A slot of healthy traffic, then one of failures that opens the breaker.
    await send(30)
    // all 30 in closed slots (they may straddle a boundary: two slots, neither with all 30)
    await waitFor(async () => windowTotal((await historyOf('catalog')).requests) >= 30, { timeoutMs: 15_000, what: 'the healthy requests in closed slots' })
    failing = true
    await send(60)
    const after = await waitFor(async () => {
      const view = await historyOf('catalog')
      return view.marks.some((m) => m.text === 'breaker open') && view.serverErrors.some((n) => (n ?? 0) > 0) ? view : undefined
    }, { timeoutMs: 15_000, what: 'a slot with the failures and the breaker\'s opening' })
    expect(windowTotal(after.serverErrors)).toBe(60)

    await page.locator('tr[data-route="catalog"] td a').click()
    await expect.poll(() => page.locator('#route-name').textContent(), { timeout: 5_000 }).toBe('catalog')
    const rise = await waitFor(async () => {
      const data = await chartData('errors')
      const fivexx = (data?.[1] ?? []).filter((v): v is number => v !== null)
      const first = fivexx.findIndex((v) => v > 50)
      return first > 0 && fivexx.slice(0, first).includes(0) ? fivexx : undefined
    }, { timeoutMs: 10_000, what: 'the errors chart to rise from 0 to over 50 %' })
    // every failing request was answered 5xx: by the upstream, then by the open breaker
    expect(Math.max(...rise)).toBe(100)
    const requests = await chartData('requests')
    expect((requests?.[1] ?? []).some((v) => v !== null && v >= 30 / 5)).toBe(true)
    await expect.poll(() => page.locator('#marks li[data-kind="breaker"]').allTextContents(), { timeout: 5_000 }).toEqual(expect.arrayContaining([expect.stringContaining('breaker open')]))
    expect(Number(await page.locator('#chart-errors').getAttribute('data-marks'))).toBeGreaterThanOrEqual(1)
    const refusals = await chartData('refusals')
    expect(refusals?.length).toBe(2) // x and circuit_open

    // the table's sparkline draws the errors too (a red line off the baseline)
    const points = await page.locator('tr[data-route="catalog"] svg.spark polyline.errors').getAttribute('points')
    expect(points?.split(' ').some((point) => Number(point.split(',')[1]) < 23)).toBe(true)
    await page.screenshot({ path: process.env.CHARTS_SCREENSHOT ?? '/tmp/portico-charts.png', fullPage: true })
  })

  it('marks an operator\'s action on the route\'s charts', async () => {
    const forced = await request(`${gateway.adminUrl}/admin/routes/catalog/breaker`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ state: 'closed', reason: 'upstream fixed' }) })
    expect(forced.statusCode).toBe(200)
    await forced.body.dump()
    await expect.poll(() => page.locator('#marks li[data-kind="operator"]').allTextContents(), { timeout: 10_000 }).toEqual([expect.stringContaining('breaker closed by admin: upstream fixed')])
  })

  it('filters the routes it shows (the feed carries those only)', async () => {
    await page.locator('#route-filter').fill('qui')
    await expect.poll(() => page.locator('#routes tbody tr').evaluateAll((rows) => rows.map((row) => row.getAttribute('data-route'))), { timeout: 5_000 }).toEqual(['quiet'])
    expect(await page.locator('#route-count').textContent()).toBe('showing 1 of 1 matching · 3 in all')
    await page.locator('#route-filter').fill('')
    await expect.poll(() => page.locator('#routes tbody tr').count(), { timeout: 5_000 }).toBe(3)
  })

  it('charts a route\'s auth refusals by reason', async () => {
    failing = false
    for (const headers of [{}, {}, { 'x-api-key': 'not-a-key' }]) await (await request(`${gateway.url}/keyed/x`, { headers })).body.dump()
    expect((await request(`${gateway.url}/keyed/x`, { headers: { 'x-api-key': 'test' } })).statusCode).toBe(200)
    const refusals = await waitFor(async () => {
      const view = (await (await request(`${gateway.adminUrl}/admin/routes/keyed/history`, { headers: auth })).body.json()) as { charts: { title: string; series: Record<string, (number | null)[]> }[] }
      const chart = view.charts.find((c) => c.title === 'Auth refusals by reason')
      return chart && windowTotal(chart.series.missing) === 2 ? chart : undefined
    }, { timeoutMs: 15_000, what: 'the auth refusals in a closed slot' })
    expect(Object.fromEntries(Object.entries(refusals.series).map(([reason, values]) => [reason, windowTotal(values)]))).toEqual({ missing: 2, invalid: 1 })
  })

  it('is readable dark and on a phone, with nothing the page\'s policy refuses', async () => {
    const phone = await browser.newPage({ viewport: { width: 390, height: 844 }, colorScheme: 'dark' })
    watchProblems(phone)
    try {
      await phone.goto(`${gateway.adminUrl}/#route=catalog`)
      await phone.locator('#token').fill(TOKEN)
      await phone.getByRole('button', { name: 'Connect' }).click()
      await expect.poll(() => phone.evaluate(() => (document.querySelector('#chart-requests') as (Element & { uplot?: unknown }) | null)?.uplot !== undefined), { timeout: 10_000, message: problems.join('\n') }).toBe(true)
      const layout = await phone.evaluate(() => ({
        page: document.documentElement.scrollWidth,
        chart: document.querySelector('#chart-requests canvas')?.getBoundingClientRect().width ?? 0,
        background: getComputedStyle(document.documentElement).backgroundColor,
      }))
      expect(layout.page).toBeLessThanOrEqual(390)
      expect(layout.chart).toBeGreaterThan(200)
      expect(layout.chart).toBeLessThanOrEqual(390)
      expect(layout.background).toBe('rgb(18, 22, 29)')
    } finally {
      await phone.close()
    }
    expect(problems).toEqual([])
  })
})
