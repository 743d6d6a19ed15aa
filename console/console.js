// The status page: reads the admin API with the operator's token (kept in sessionStorage, for this tab only), follows
// its Server-Sent Events feed, and posts the operator's actions after a confirmation. No framework, no build step: the
// charts are uPlot, served from the package's own dependencies.
import uPlot from '/vendor/uplot.js'

const TOKEN_KEY = 'portico-admin-token'
let token = sessionStorage.getItem(TOKEN_KEY) ?? ''
let previous
/** The routes' last 15 minutes (requests and 5xx per 5 s slot), from the feed's `history` event and each `slot` after. */
let traffic
let historyVersion = 0
const $ = (selector) => document.querySelector(selector)

const headers = () => (token ? { authorization: `Bearer ${token}` } : {})

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag)
  for (const [name, value] of Object.entries(attributes)) {
    if (name === 'onclick') node.addEventListener('click', value)
    else node.setAttribute(name, value)
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)))
  return node
}

function askForToken() {
  $('#console').hidden = true
  $('#login').hidden = false
  $('#summary').textContent = 'this admin port wants a token'
}

$('#login').addEventListener('submit', (event) => {
  event.preventDefault()
  token = $('#token').value.trim()
  sessionStorage.setItem(TOKEN_KEY, token)
  $('#login').hidden = true
  follow()
})

/** The feed being read, and what it is filtered on: a new filter reads a new feed. */
let feed = new AbortController()
let filter = ''
let filterTimer

$('#route-filter').addEventListener('input', (event) => {
  clearTimeout(filterTimer)
  filterTimer = setTimeout(() => {
    filter = event.target.value.trim()
    feed.abort()
  }, 300)
})

/** Reads the event stream with fetch (EventSource cannot send the token); reconnects when it ends. */
async function follow() {
  feed = new AbortController()
  const { signal } = feed
  let response
  try {
    response = await fetch(`/admin/events${filter ? `?route=${encodeURIComponent(filter)}` : ''}`, { headers: headers(), signal })
  } catch {
    return signal.aborted ? follow() : retry()
  }
  if (response.status === 401) return askForToken()
  if (!response.ok || !response.body) return retry()
  $('#console').hidden = false
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader()
  let buffer = ''
  for (;;) {
    const { value, done } = await reader.read().catch(() => ({ done: true }))
    if (signal.aborted) return follow()
    if (done) break
    buffer += value
    for (let end = buffer.indexOf('\n\n'); end !== -1; end = buffer.indexOf('\n\n')) {
      const lines = buffer.slice(0, end).split('\n')
      const event = lines.find((line) => line.startsWith('event: '))?.slice(7) ?? 'message'
      const data = lines.filter((line) => line.startsWith('data: ')).map((line) => line.slice(6)).join('\n')
      buffer = buffer.slice(end + 2)
      if (data) onEvent(event, JSON.parse(data))
    }
  }
  retry()
}

function onEvent(event, data) {
  if (event === 'snapshot') return render(data)
  if (event === 'history') {
    traffic = { ...data, slots: data.times.length }
    historyChanged()
  }
  if (event === 'slot' && traffic) {
    addSlot(data)
    historyChanged()
  }
}

/** A final slot into the history: a new one at the end (the oldest out), or a slot already there summed again. */
function addSlot(slot) {
  const { times, routes, slotMs } = traffic
  while (times.at(-1) < slot.at) {
    times.push(times.at(-1) + slotMs)
    traffic.fleet?.push(0)
    for (const series of Object.values(routes)) {
      series.requests.push(0)
      series.errors.push(0)
    }
  }
  const at = times.indexOf(slot.at)
  if (at === -1) return
  if (traffic.fleet) traffic.fleet[at] = slot.fleet ? 1 : 0
  for (const [name, series] of Object.entries(routes)) {
    const [requests, errors] = slot.routes[name] ?? [0, 0]
    series.requests[at] = requests
    series.errors[at] = errors
  }
  for (const [name, [requests, errors]] of Object.entries(slot.routes)) {
    if (routes[name]) continue
    routes[name] = { requests: times.map(() => null), errors: times.map(() => null) }
    routes[name].requests[at] = requests
    routes[name].errors[at] = errors
  }
  const extra = times.length - traffic.slots
  if (extra > 0) {
    times.splice(0, extra)
    traffic.fleet?.splice(0, extra)
    for (const series of Object.values(routes)) {
      series.requests.splice(0, extra)
      series.errors.splice(0, extra)
    }
  }
}

function historyChanged() {
  historyVersion++
  drawSparklines()
  if (shownRoute) void showRoute(shownRoute)
}

const SVG = 'http://www.w3.org/2000/svg'
const sparklines = new Map()

/** A route's requests (and, in red, its 5xx answers, on the same scale) over the window, as a line each. */
function sparkline(name) {
  const cached = sparklines.get(name)
  if (cached?.version === historyVersion) return cached.node
  const series = traffic?.routes[name]
  const node = document.createElementNS(SVG, 'svg')
  node.setAttribute('class', 'spark')
  node.setAttribute('viewBox', '0 0 180 24')
  node.setAttribute('preserveAspectRatio', 'none')
  if (series) {
    const peak = Math.max(1, ...series.requests.map((n) => n ?? 0))
    const points = (values) => values.map((n, i) => `${((i * 180) / Math.max(1, values.length - 1)).toFixed(1)},${(23 - ((n ?? 0) * 22) / peak).toFixed(1)}`).join(' ')
    for (const [kind, values] of [['requests', series.requests], ['errors', series.errors]]) {
      const line = document.createElementNS(SVG, 'polyline')
      line.setAttribute('class', kind)
      line.setAttribute('points', points(values))
      node.append(line)
    }
    const seconds = traffic.slotMs / 1000
    const title = document.createElementNS(SVG, 'title')
    title.textContent = `last 15 min: peak ${(peak / seconds).toFixed(1)} req/s, ${series.errors.reduce((n, e) => n + (e ?? 0), 0)} 5xx`
    node.append(title)
  }
  sparklines.set(name, { version: historyVersion, node })
  return node
}

function drawSparklines() {
  for (const cell of document.querySelectorAll('#routes td[data-spark]')) cell.replaceChildren(sparkline(cell.dataset.spark))
}

// The route view: larger charts of one route, with breaker transitions, operator actions and route table changes marked.
let shownRoute
const charts = new Map()
const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim()
const PALETTE = ['--series-1', '--series-2', '--series-3', '--series-4', '--series-5', '--series-6']
const MARK_COLOURS = { breaker: '--bad', operator: '--warn', reload: '--accent' }

window.addEventListener('hashchange', () => routeFromHash())
function routeFromHash() {
  const name = /^#route=(.+)$/.exec(location.hash)?.[1]
  shownRoute = name === undefined ? undefined : decodeURIComponent(name)
  $('#route-view').hidden = shownRoute === undefined
  if (shownRoute !== undefined) void showRoute(shownRoute)
}
$('#route-close').addEventListener('click', (event) => {
  event.preventDefault()
  window.history.replaceState(null, '', location.pathname)
  routeFromHash()
})

async function showRoute(name) {
  const response = await fetch(`/admin/routes/${encodeURIComponent(name)}/history`, { headers: headers() }).catch(() => undefined)
  if (name !== shownRoute) return
  if (!response?.ok) {
    $('#route-scope').textContent = response?.status === 404 ? 'no such route' : 'history unavailable'
    return
  }
  drawRoute(await response.json())
}

/** Each chart's series as uPlot wants them: x in seconds, one array per line. */
function chartsOf(view) {
  const seconds = view.slotMs / 1000
  const perSecond = (values) => values.map((n) => (n === null ? null : n / seconds))
  const percentOf = (values) => values.map((n, i) => (n === null || !view.requests[i] ? null : (n * 100) / view.requests[i]))
  const lines = (record, as) => {
    const entries = Object.entries(record)
    const totals = view.times.map((_, i) => entries.reduce((sum, [, values]) => sum + (values[i] ?? 0), 0))
    return entries.map(([label, values]) => ({ label, values: as === 'shares' ? values.map((n, i) => (n === null || !totals[i] ? null : (n * 100) / totals[i])) : perSecond(values) }))
  }
  const specs = [
    { id: 'requests', title: 'Requests per second', lines: [{ label: 'req/s', values: perSecond(view.requests) }] },
    { id: 'errors', title: 'Errors, % of requests', lines: [{ label: '5xx %', values: percentOf(view.serverErrors), colour: '--bad' }, { label: '4xx %', values: percentOf(view.clientErrors), colour: '--warn' }] },
    { id: 'latency', title: 'Latency (ms)', lines: [{ label: 'p50', values: view.p50 }, { label: 'p99', values: view.p99, colour: '--bad' }] },
  ]
  if (Object.keys(view.refusals).length > 0) specs.push({ id: 'refusals', title: 'Answers the gateway gave itself, by code, per second', lines: lines(view.refusals) })
  view.charts.forEach((chart, i) => specs.push({ id: `policy-${i}`, title: chart.as === 'shares' ? `${chart.title} (%)` : `${chart.title}, per second`, lines: lines(chart.series, chart.as) }))
  return specs
}

/** Draws the marks as dashed vertical lines over the plot. */
const marksPlugin = (marksOf) => ({
  hooks: {
    draw: [
      (u) => {
        const { ctx, bbox } = u
        for (const mark of marksOf()) {
          const x = u.valToPos(mark.at / 1000, 'x', true)
          if (x < bbox.left || x > bbox.left + bbox.width) continue
          ctx.save()
          ctx.strokeStyle = cssVar(MARK_COLOURS[mark.kind] ?? '--fg')
          ctx.lineWidth = 2
          ctx.setLineDash([5, 4])
          ctx.beginPath()
          ctx.moveTo(x, bbox.top)
          ctx.lineTo(x, bbox.top + bbox.height)
          ctx.stroke()
          ctx.restore()
        }
      },
    ],
  },
})

function drawRoute(view) {
  $('#route-name').textContent = view.route
  const local = view.fleet ? view.fleet.filter((f) => f === 0).length : 0
  $('#route-scope').textContent = view.fleet ? `summed over every replica (and worker)${local === 0 ? '' : `: ${local} of ${view.fleet.length} slots are this one's alone`}` : 'this replica'
  const x = view.times.map((t) => t / 1000)
  const specs = chartsOf(view)
  const container = $('#route-charts')
  const width = Math.max(280, container.clientWidth)
  const wanted = new Set(specs.map((s) => s.id))
  for (const [id, chart] of charts) if (!wanted.has(id)) {
    chart.uplot.destroy()
    chart.box.remove()
    charts.delete(id)
  }
  for (const spec of specs) {
    const data = [x, ...spec.lines.map((l) => l.values)]
    const shape = spec.lines.map((l) => l.label).join('\u0000')
    let chart = charts.get(spec.id)
    if (chart && chart.shape !== shape) {
      chart.uplot.destroy()
      chart.box.remove()
      chart = undefined
    }
    if (!chart) {
      const box = element('figure', { id: `chart-${spec.id}`, class: 'chart' }, element('figcaption', {}, spec.title))
      container.append(box)
      const axis = { stroke: cssVar('--fg'), grid: { stroke: cssVar('--grid') }, ticks: { stroke: cssVar('--grid') } }
      const uplot = new uPlot(
        {
          width,
          height: 170,
          scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
          axes: [axis, axis],
          series: [{}, ...spec.lines.map((line, i) => ({ label: line.label, stroke: cssVar(line.colour ?? PALETTE[i % PALETTE.length]), width: 2, spanGaps: false }))],
          plugins: [marksPlugin(() => chart.marks)],
        },
        data,
        box,
      )
      chart = { box, uplot, shape, marks: view.marks }
      // Tests and curious operators read what a chart draws from the page.
      box.uplot = uplot
      charts.set(spec.id, chart)
    } else {
      chart.marks = view.marks
      chart.uplot.setData(data)
    }
    chart.box.dataset.marks = String(view.marks.length)
  }
  $('#marks').replaceChildren(
    ...(view.marks.length
      ? view.marks.map((mark) => element('li', { 'data-kind': mark.kind }, element('time', { datetime: new Date(mark.at).toISOString() }, new Date(mark.at).toLocaleTimeString()), ` ${mark.text}`))
      : [element('li', { class: 'none' }, 'none in the window')]),
  )
}

new ResizeObserver(() => {
  const width = Math.max(280, $('#route-charts').clientWidth)
  for (const { uplot } of charts.values()) if (uplot.width !== width) uplot.setSize({ width, height: 170 })
}).observe($('#route-charts'))

function retry() {
  $('#summary').textContent = 'reconnecting…'
  setTimeout(follow, 1000)
}

/** Requests per second, 5xx share and p99 between two snapshots' counts. */
function rates(route, snapshot) {
  const before = previous?.routes.find((r) => r.name === route.name)?.traffic
  const now = route.traffic
  if (!before || !previous) return { rps: '–', errors: '–', p99: '–' }
  const seconds = (snapshot.at - previous.at) / 1000
  const requests = now.requests - before.requests
  if (requests <= 0) return { rps: '0', errors: '–', p99: '–' }
  const deltas = now.buckets.map((n, i) => n - (before.buckets[i] ?? 0))
  let seen = 0
  let p99 = '> ' + snapshot.bucketBounds.at(-1) + ' s'
  for (let i = 0; i < deltas.length; i++) {
    seen += deltas[i]
    if (seen >= requests * 0.99) {
      p99 = i < snapshot.bucketBounds.length ? `≤ ${snapshot.bucketBounds[i] * 1000} ms` : p99
      break
    }
  }
  return { rps: (requests / seconds).toFixed(1), errors: `${(((now.errors - before.errors) / requests) * 100).toFixed(1)} %`, p99 }
}

async function act(path, body, question, method = 'POST') {
  if (!confirm(question)) return
  const reason = prompt('Reason (for the audit log)?') ?? undefined
  const response = await fetch(path, { method, headers: { ...headers(), 'content-type': 'application/json' }, body: JSON.stringify({ ...body, reason }) })
  const answer = await response.json().catch(() => ({}))
  $('#status').textContent = response.ok ? `done: ${question}` : `refused: ${answer.detail ?? response.status}`
}

/** A consumer of the consumers files: its keys (revoked ones counted), and revoking or restoring it fleet-wide. */
function consumerRow(consumer) {
  const path = `/admin/consumers/${encodeURIComponent(consumer.name)}`
  const keys = `${consumer.keys} key${consumer.keys === 1 ? '' : 's'}${consumer.revokedKeys ? ` · ${consumer.revokedKeys} revoked` : ''}`
  return element('tr', { 'data-consumer': consumer.name, 'data-revoked': String(consumer.revoked) },
    element('td', {}, consumer.name, consumer.revoked ? element('span', { class: 'state bad' }, 'revoked') : ''),
    element('td', {}, consumer.groups.join(', ') || '—'),
    element('td', {}, keys),
    element('td', {}, consumer.limits ? consumer.limits.map((l) => `${l.limit}/${l.windowMs / 1000}s`).join(', ') : '—'),
    element('td', {}, consumer.revoked
      ? element('button', { 'data-action': 'restore', onclick: () => act(`${path}/restore`, {}, `Let "${consumer.name}" in again on every replica?`) }, 'Restore')
      : element('button', { 'data-action': 'revoke', onclick: () => act(path, {}, `Revoke every key of "${consumer.name}" (and its tokens) on every replica?`, 'DELETE') }, 'Revoke')))
}

/** A policy's cell as its policy described it: a badge or plain text, and a second line. */
function policyCell(attribute, cell) {
  if (!cell) return element('td', { [`data-${attribute}`]: 'none' }, '—')
  return element('td', { [`data-${attribute}`]: cell.mark },
    cell.tone ? element('span', { class: `state ${cell.tone}` }, cell.text) : cell.text,
    cell.note ? element('div', { class: 'note' }, cell.note) : '')
}

const CORE_COLUMNS = ['Route', 'Prefix', 'Target', 'Instances', 'Last 15 min', 'req/s', 'Errors', 'p99']

function render(snapshot) {
  const healthy = snapshot.health?.status ?? '?'
  $('#summary').textContent = `replica ${snapshot.replica.slice(0, 8)} · route table v${snapshot.tableVersion} · ${healthy}`
  const titles = [...CORE_COLUMNS, ...snapshot.columns.map((c) => c.title), 'Actions']
  $('#routes thead').replaceChildren(element('tr', {}, ...titles.map((title) => element('th', {}, title))))
  const rows = snapshot.routes.map((route) => {
    const { rps, errors, p99 } = rates(route, snapshot)
    const instances = element('td', {}, ...route.instances.map((instance) => {
      const out = instance.state !== 'in rotation'
      const path = `/admin/routes/${encodeURIComponent(route.name)}/instances/${encodeURIComponent(instance.id)}`
      return element('div', { class: 'instance', title: instance.state }, element('span', { class: `state ${out ? 'bad' : 'good'}` }, out ? 'out' : 'in'), ` ${instance.origin} `,
        out
          ? element('button', { onclick: () => act(`${path}/admit`, {}, `Put ${instance.origin} back into rotation on "${route.name}"?`) }, 'Admit')
          : element('button', { onclick: () => act(`${path}/eject`, {}, `Take ${instance.origin} out of rotation on "${route.name}", on every replica?`) }, 'Eject'))
    }), ...(route.instanceCount > route.instances.length ? [element('div', { class: 'note' }, `and ${route.instanceCount - route.instances.length} more (GET /admin/routes)`)] : []))
    const breakerPath = `/admin/routes/${encodeURIComponent(route.name)}/breaker`
    const actions = element('td', {},
      element('button', { 'data-action': 'open', onclick: () => act(breakerPath, { state: 'open' }, `Open the breaker of "${route.name}" on every replica? Its clients get 503.`) }, 'Open breaker'),
      element('button', { 'data-action': 'closed', onclick: () => act(breakerPath, { state: 'closed' }, `Hold the breaker of "${route.name}" closed on every replica?`) }, 'Hold closed'),
      element('button', { 'data-action': 'auto', onclick: () => act(breakerPath, { state: 'auto' }, `Give the breaker of "${route.name}" back to its policy?`) }, 'Auto'))
    return element('tr', { 'data-route': route.name },
      element('td', {}, element('a', { href: `#route=${encodeURIComponent(route.name)}`, title: 'Charts of the last 15 minutes' }, route.name)), element('td', {}, route.prefix), element('td', {}, route.target), instances,
      element('td', { 'data-spark': route.name }, sparkline(route.name)),
      element('td', { 'data-rate': 'requests' }, rps), element('td', { 'data-rate': 'errors' }, errors), element('td', { 'data-rate': 'p99' }, p99),
      ...snapshot.columns.map(({ attribute }) => policyCell(attribute, route.cells[attribute])),
      actions)
  })
  $('#routes tbody').replaceChildren(...rows)
  const { routeCount, routesMatched } = snapshot
  $('#route-count').textContent = rows.length < routeCount ? `showing ${rows.length} of ${routesMatched} matching · ${routeCount} in all${rows.length < routesMatched ? ' (narrow the filter for the others)' : ''}` : `${routeCount} routes`
  $('#consumers tbody').replaceChildren(...snapshot.consumers.map(consumerRow), ...(snapshot.consumerCount > snapshot.consumers.length ? [element('tr', {}, element('td', { class: 'none' }, `and ${snapshot.consumerCount - snapshot.consumers.length} more (GET /admin/consumers)`))] : []))
  $('#fleet tbody').replaceChildren(...snapshot.fleet.map((replica) => element('tr', {}, element('td', {}, String(replica.id).slice(0, 8)), element('td', {}, replica.version ?? '?'), element('td', {}, `${replica.uptimeSeconds ?? '?'} s`), element('td', {}, `v${replica.routeTableVersion ?? '?'}`), element('td', {}, replica.health ?? '?'))))
  $('#errors').replaceChildren(...(snapshot.errors.length ? snapshot.errors.map((e) => element('li', {}, e)) : [element('li', { class: 'none' }, 'none')]))
  previous = snapshot
}

routeFromHash()
follow()
