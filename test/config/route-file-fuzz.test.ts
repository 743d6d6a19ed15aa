import { request } from 'undici'
import { describe, expect, it } from 'vitest'
import { mergeRouteSources } from '../../src/config/merge-sources.js'
import { formatRouteFileError, parseRouteFile, ROUTE_FILE_LIMITS } from '../../src/config/parse-route-file.js'
import { startGateway } from '../support/gateway.js'
import { waitFor } from '../support/poll.js'
import { startUpstream } from '../support/upstream.js'

const VALID = `routes:
  - name: users
    prefix: /api/users
    upstreams: [http://127.0.0.1:9001, http://127.0.0.1:9002]
    timeout: { connect: 1s, response: 5s }
    rateLimit: &limit
      key: ip
      limits: [{ limit: 10, window: 1m }]
    retry: { attempts: 2, on: [connect-error, 503] }
  - name: orders
    prefix: /api/orders
    service: orders
    rateLimit: *limit
    circuitBreaker: { volumeThreshold: 5 }
`

/** Deterministic PRNG (mulberry32), so a failing case can be replayed from its seed. */
function random(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296
  }
}

const YAML_SIGNIFICANT = ['*', '&', '<<: ', '!', '!!', '{', '}', '[', ']', ':', '- ', ',', '#', '|', '>', "'", '"', '%YAML 1.1\n---\n', '@', '\n', '  ', '\t', '?', '\u0000', '\u001b[31m', '*limit', '&x ', '*x']

function mutate(text: string, next: () => number): string {
  let out = text
  const edits = 1 + Math.floor(next() * 6)
  for (let i = 0; i < edits; i++) {
    const at = Math.floor(next() * (out.length + 1))
    const choice = next()
    if (choice < 0.4) out = out.slice(0, at) + YAML_SIGNIFICANT[Math.floor(next() * YAML_SIGNIFICANT.length)] + out.slice(at)
    else if (choice < 0.7) out = out.slice(0, at) + out.slice(at + 1 + Math.floor(next() * 8))
    else out = out.slice(0, at) + String.fromCharCode(Math.floor(next() * 256)) + out.slice(at)
  }
  return out
}

const nested = (depth: number) => `routes: ${'['.repeat(depth)}${']'.repeat(depth)}\n`
const aliasBomb = (levels: number) => {
  const lines = ['a0: &a0 [x, x, x, x, x, x, x, x, x]']
  for (let i = 1; i < levels; i++) lines.push(`a${i}: &a${i} [${Array.from({ length: 9 }, () => `*a${i - 1}`).join(', ')}]`)
  return `${lines.join('\n')}\nroutes: []\n`
}
const manyAnchors = (count: number) => `list:\n${Array.from({ length: count }, (_, i) => `  - &n${i} ${i}`).join('\n')}\nroutes: []\n`

/** Hand-written members of each class the hostile-input review found, each with the line its error must name. */
const HOSTILE: [string, string, number | undefined][] = [
  ['an unresolved alias', 'routes: *nope\n', 1],
  ['an unresolved alias as a key', 'routes: []\n? *x\n: 1\n', 2],
  ['an alias bomb', aliasBomb(9), undefined],
  ['an alias inside its own anchor', 'a: &a [*a]\nroutes: []\n', 1],
  ['a merge key into itself (YAML 1.1)', '%YAML 1.1\n---\na: &a {<<: *a}\nroutes: []\n', 3],
  ['a merge of a scalar (YAML 1.1)', '%YAML 1.1\n---\na: {<<: 5}\nroutes: []\n', undefined],
  ['a merge of an unknown anchor (YAML 1.1)', '%YAML 1.1\n---\nroutes:\n  - <<: *defaults\n    name: a\n', 4],
  ['a chain of merges (YAML 1.1)', `%YAML 1.1\n---\n${Array.from({ length: 60 }, (_, i) => (i === 0 ? 'm0: &m0 {x: 1}' : `m${i}: &m${i} {<<: *m${i - 1}}`)).join('\n')}\nroutes: []\n`, undefined],
  ['deep nesting', nested(20_000), undefined],
  ['binary and set tags', 'routes: !!binary aGVsbG8=\nother: !!set {a, b}\n', undefined],
  ['an unknown tag', 'routes: !nope [1]\n', undefined],
  ['several documents', 'routes: []\n---\nroutes: []\n', undefined],
  ['too many anchors', manyAnchors(ROUTE_FILE_LIMITS.anchorsAndAliases + 1), undefined],
  ['a file over the size bound', `routes: []\n# ${'x'.repeat(ROUTE_FILE_LIMITS.bytes)}\n`, 1],
  ['control characters in a key', 'routes:\n  - name: a\n    prefix: /a\n    service: s\n    "\\e[31mred": 1\n', 5],
  ['a __proto__ key', '__proto__: {polluted: true}\nroutes: []\n', 1],
  ['a number too large for JavaScript', 'routes:\n  - name: a\n    prefix: /a\n    service: s\n    retry: { attempts: 123456789012345678901234567890 }\n', 5],
]

function expectWellFormedErrors(file: string, result: ReturnType<typeof parseRouteFile>): void {
  expect(result.routes).toEqual([])
  expect(result.errors.length).toBeGreaterThan(0)
  for (const error of result.errors) {
    expect(error.file).toBe(file)
    expect(Number.isInteger(error.line) && error.line >= 1).toBe(true)
    expect(formatRouteFileError(error)).toMatch(new RegExp(`^${file.replace('.', '\\.')}:\\d+: \\S`))
    // one line, nothing a terminal would act on
    expect(formatRouteFileError(error)).not.toMatch(/[\u0000-\u0008\u000a-\u001f\u007f-\u009f]/)
  }
}

describe('hostile route files', () => {
  it.each(HOSTILE)('refuses %s with file:line, without throwing', (_case, text, line) => {
    const result = parseRouteFile('evil.yaml', text)
    expectWellFormedErrors('evil.yaml', result)
    if (line !== undefined) expect(result.errors[0]?.line).toBe(line)
  })

  it('names what is wrong in words an operator can act on', () => {
    expect(parseRouteFile('a.yaml', 'routes: *nope\n').errors[0]?.message).toBe('alias "*nope" has no anchor "&nope" above it')
    expect(parseRouteFile('a.yaml', 'a: &a [*a]\nroutes: []\n').errors[0]?.message).toBe('alias "*a" is inside the value it refers to')
    expect(parseRouteFile('a.yaml', aliasBomb(9)).errors[0]?.message).toMatch(/aliases expand to more than 100 copies/)
    expect(formatRouteFileError(parseRouteFile('a.yaml', HOSTILE[14]![1]).errors[0]!)).toContain('\\x1b[31mred')
  })

  it('still accepts anchors and aliases used the ordinary way', () => {
    const { routes, errors } = parseRouteFile('ok.yaml', VALID)
    expect(errors).toEqual([])
    expect(routes.map((r) => [r.name, (r.policies.get('rateLimit') as { limits: unknown }).limits])).toEqual([
      ['users', [{ limit: 10, windowMs: 60_000 }]],
      ['orders', [{ limit: 10, windowMs: 60_000 }]],
    ])
  })

  // A seeded fuzz run: mutations of a valid file (YAML punctuation, deletions, random bytes) and every hostile class.
  // Whatever the text, parsing answers routes or file:line errors, and a bad file never blocks a good one.
  it('never throws and never blocks another file, over 400 seeded mutations', () => {
    const next = random(20261125)
    const started = Date.now()
    let refused = 0
    for (let i = 0; i < 400 && Date.now() - started < 20_000; i++) {
      const text = i % 40 === 0 ? HOSTILE[(i / 40) % HOSTILE.length]![1] : mutate(VALID, next)
      const file = `fuzz-${i}.yaml`
      const result = parseRouteFile(file, text)
      if (result.errors.length > 0) {
        refused++
        expectWellFormedErrors(file, result)
      }
      const merged = mergeRouteSources([{ source: file, text }, { source: 'good.yaml', text: 'routes:\n  - name: good\n    prefix: /good\n    service: good\n' }], new Map())
      expect(merged.sources.find((s) => s.source === 'good.yaml')).toMatchObject({ state: 'applied', routes: 1 })
    }
    expect(refused).toBeGreaterThan(100)
  })
})

describe('a live gateway while hostile route files come and go', () => {
  // Seeded like the test above; each file is a reload. The big one takes seconds to parse: on its own thread.
  it('never stops, never holds a request more than 200 ms, and reports each file as file:line', async () => {
    const upstream = await startUpstream('good')
    const gateway = await startGateway({ 'good.yaml': `routes:\n  - name: good\n    prefix: /good\n    upstreams: [${upstream.url}]\n` })
    const next = random(7)
    const latencies: number[] = []
    let writing = true
    const traffic = (async () => {
      while (writing) {
        const started = performance.now()
        const response = await request(`${gateway.url}/good`)
        await response.body.dump()
        latencies.push(performance.now() - started)
        expect(response.statusCode).toBe(200)
      }
    })()
    const admin = async () => (await (await request(`${gateway.adminUrl}/admin/routes`)).body.json()) as { version: number; errors: { file: string; line: number; text: string }[] }
    try {
      const files = [
        ...HOSTILE.map(([, text]) => text),
        `routes: [${'1,'.repeat(150_000)}1]\n`, // valid YAML, ~300 KB of values: seconds of parsing
        ...Array.from({ length: 30 }, () => mutate(VALID.replaceAll('/api/', '/fuzz/'), next)),
      ]
      const started = Date.now()
      for (const [i, text] of files.entries()) {
        if (Date.now() - started > 40_000) break
        const before = (await admin()).version
        await gateway.writeRoutes(`fuzz-${i % 4}.yaml`, text)
        const report = await waitFor(async () => {
          const live = await admin()
          return live.version > before ? live : undefined
        }, { timeoutMs: 10_000, what: `reload ${i}` })
        for (const error of report.errors) expect(error.text).toMatch(/^\S+\.yaml:\d+: \S/)
      }
    } finally {
      writing = false
      await traffic
      await gateway.close()
      await upstream.close()
    }
    expect(latencies.length).toBeGreaterThan(50)
    expect(Math.max(...latencies)).toBeLessThan(200)
  }, 60_000)
})
