// The status page: reads the admin API with the operator's token (kept in sessionStorage, for this tab only), follows
// its Server-Sent Events feed, and posts the operator's actions after a confirmation. No framework, no build step.
const TOKEN_KEY = 'portico-admin-token'
let token = sessionStorage.getItem(TOKEN_KEY) ?? ''
let previous
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

/** Reads the event stream with fetch (EventSource cannot send the token); reconnects when it ends. */
async function follow() {
  let response
  try {
    response = await fetch('/admin/events', { headers: headers() })
  } catch {
    return retry()
  }
  if (response.status === 401) return askForToken()
  if (!response.ok || !response.body) return retry()
  $('#console').hidden = false
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader()
  let buffer = ''
  for (;;) {
    const { value, done } = await reader.read().catch(() => ({ done: true }))
    if (done) break
    buffer += value
    for (let end = buffer.indexOf('\n\n'); end !== -1; end = buffer.indexOf('\n\n')) {
      const data = buffer.slice(0, end).split('\n').filter((line) => line.startsWith('data: ')).map((line) => line.slice(6)).join('\n')
      buffer = buffer.slice(end + 2)
      if (data) render(JSON.parse(data))
    }
  }
  retry()
}

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

const CORE_COLUMNS = ['Route', 'Prefix', 'Target', 'Instances', 'req/s', 'Errors', 'p99']

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
    }))
    const breakerPath = `/admin/routes/${encodeURIComponent(route.name)}/breaker`
    const actions = element('td', {},
      element('button', { 'data-action': 'open', onclick: () => act(breakerPath, { state: 'open' }, `Open the breaker of "${route.name}" on every replica? Its clients get 503.`) }, 'Open breaker'),
      element('button', { 'data-action': 'closed', onclick: () => act(breakerPath, { state: 'closed' }, `Hold the breaker of "${route.name}" closed on every replica?`) }, 'Hold closed'),
      element('button', { 'data-action': 'auto', onclick: () => act(breakerPath, { state: 'auto' }, `Give the breaker of "${route.name}" back to its policy?`) }, 'Auto'))
    return element('tr', { 'data-route': route.name },
      element('td', {}, route.name), element('td', {}, route.prefix), element('td', {}, route.target), instances,
      element('td', { 'data-rate': 'requests' }, rps), element('td', { 'data-rate': 'errors' }, errors), element('td', { 'data-rate': 'p99' }, p99),
      ...snapshot.columns.map(({ attribute }) => policyCell(attribute, route.cells[attribute])),
      actions)
  })
  $('#routes tbody').replaceChildren(...rows)
  $('#consumers tbody').replaceChildren(...snapshot.consumers.map(consumerRow), ...(snapshot.consumerCount > snapshot.consumers.length ? [element('tr', {}, element('td', { class: 'none' }, `and ${snapshot.consumerCount - snapshot.consumers.length} more (GET /admin/consumers)`))] : []))
  $('#fleet tbody').replaceChildren(...snapshot.fleet.map((replica) => element('tr', {}, element('td', {}, String(replica.id).slice(0, 8)), element('td', {}, replica.version ?? '?'), element('td', {}, `${replica.uptimeSeconds ?? '?'} s`), element('td', {}, `v${replica.routeTableVersion ?? '?'}`), element('td', {}, replica.health ?? '?'))))
  $('#errors').replaceChildren(...(snapshot.errors.length ? snapshot.errors.map((e) => element('li', {}, e)) : [element('li', { class: 'none' }, 'none')]))
  previous = snapshot
}

follow()
