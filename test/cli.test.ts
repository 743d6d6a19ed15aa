import { request } from 'undici'
import { execFileSync } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { get } from 'node:http'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { makeRoutesDir, runCli, spawnGateway, type GatewayProcess } from './support/gateway.js'
import { waitFor } from './support/poll.js'
import { rawExchange, statusesOf } from './support/raw-http.js'
import { startUpstream, type Upstream } from './support/upstream.js'

async function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = runCli(args, env)
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
  return { code, stdout, stderr }
}

describe('portico validate', () => {
  it('exits 0 with a one-line summary for valid files', async () => {
    const dir = await makeRoutesDir({ 'a.yaml': 'routes:\n  - name: a\n    prefix: /a\n    upstreams: [http://127.0.0.1:9]\n', 'b.yml': 'routes: []\n' })
    const result = await cli(['validate', dir])
    expect(result.code).toBe(0)
    expect(result.stdout.trim()).toBe('ok: 1 routes in 2 files')
  })

  it('exits 1 and prints every problem as file:line: message', async () => {
    const dir = await makeRoutesDir({
      'a.yaml': 'routes:\n  - name: a\n    prefix: /a/\n    upstreams: [http://127.0.0.1:9]\n    retries: 3\n',
      'b.yaml': 'routes:\n  - name: b\n    prefix: /b\n',
      'c.yaml': 'routes:\n  - name: c\n   prefix: /c\n',
    })
    const result = await cli(['validate', dir])
    expect(result.code).toBe(1)
    const lines = result.stderr.trim().split('\n')
    expect(lines).toEqual([
      expect.stringMatching(/a\.yaml:3: routes\[0\]\.prefix: "\/a\/" must start with "\/", have no trailing slash/),
      expect.stringMatching(/a\.yaml:5: routes\[0\]: unknown key "retries"/),
      expect.stringMatching(/b\.yaml:2: route "b": needs exactly one of "upstreams" .* and "split"/),
      expect.stringMatching(/c\.yaml:3: /),
      '4 problems in 3 of 3 files',
    ])
  })

  it('reports every hostile file as file:line and still checks the others (a FIFO is refused unread)', async () => {
    const dir = await makeRoutesDir({
      'a-alias.yaml': 'routes: *nope\n',
      'b-bomb.yaml': `a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nroutes: *c\n`,
      'c-escape.yaml': 'routes:\n  - name: c\n    prefix: /c\n    service: c\n    "\\e]0;owned\\a": 1\n',
      'e-good.yaml': 'routes:\n  - name: e\n    prefix: /e\n    service: e\n',
    })
    execFileSync('mkfifo', [join(dir, 'd-fifo.yaml')])
    const result = await cli(['validate', dir])
    expect(result.code).toBe(1)
    const lines = result.stderr.trim().split('\n')
    expect(lines).toEqual([
      expect.stringMatching(/a-alias\.yaml:1: alias "\*nope" has no anchor "&nope" above it$/),
      expect.stringMatching(/b-bomb\.yaml:1: aliases expand to more than 100 copies/),
      expect.stringMatching(/c-escape\.yaml:5: routes\[0\]: unknown key "\\x1b\]0;owned\\x07"/),
      expect.stringMatching(/d-fifo\.yaml:1: not a regular file/),
      '4 problems in 4 of 5 files',
    ])
    expect(result.stderr).not.toContain('\u001b')
  })

  it('validates the shipped routes directory', async () => {
    const result = await cli(['validate', 'routes'])
    expect(result.stderr).toBe('')
    expect(result.code).toBe(0)
  })
})

describe('portico start', () => {
  it.each([
    [['start', '--port', 'eighty'], /--port: "eighty" is not a port number/],
    [['start', '--bogus'], /Unknown option '--bogus'/],
    [['start', '--drain-timeout', '5'], /--drain-timeout: "5" is not a duration/],
    [['start', '--routes', '/nonexistent/routes'], /routes directory \/nonexistent\/routes does not exist/],
    [['launch'], /unknown command "launch"/],
  ])('fails fast on %j', async (args, message) => {
    const result = await cli(args as string[])
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(message)
  })

  it('takes its port from PORTICO_PORT and lets the flag win', async () => {
    const result = await cli(['start', '--port', '70000'], { PORTICO_PORT: '8081' })
    expect(result.stderr).toMatch(/--port: "70000"/)
    const fromEnv = await cli(['start'], { PORTICO_PORT: 'x' })
    expect(fromEnv.stderr).toMatch(/PORTICO_PORT: "x" is not a port number/)
  })
})

describe('a route file that cannot be parsed', () => {
  it('never stops the gateway: it starts with the file present and lives through the file being written', async () => {
    const good = await startUpstream('good')
    const routesDir = await makeRoutesDir({ 'good.yaml': `routes:\n  - name: good\n    prefix: /good\n    upstreams: [${good.url}]\n`, 'typo.yaml': 'routes: *nope\n' })
    const gateway = await spawnGateway(routesDir)
    try {
      expect((await request(`${gateway.url}/good`)).statusCode).toBe(200)
      await writeFile(join(routesDir, 'bomb.yaml'), '%YAML 1.1\n---\na: &a {<<: *a}\nroutes: []\n')
      await waitFor(() => gateway.output().includes('bomb.yaml:3: alias \\"*a\\" is inside the value it refers to'), { what: 'the refusal to be logged' })
      expect(gateway.child.exitCode).toBe(null)
      expect((await request(`${gateway.url}/good`)).statusCode).toBe(200)
      expect(gateway.output()).toContain('typo.yaml:1: alias \\"*nope\\" has no anchor')
    } finally {
      await gateway.stop('SIGKILL')
      await good.close()
    }
  })
})

describe('signals', () => {
  let slow: Upstream
  let gateway: GatewayProcess
  let routesDir: string
  beforeAll(async () => {
    slow = await startUpstream('slow', (req, res) => {
      const delay = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('ms') ?? 0)
      setTimeout(() => res.end(`done after ${delay}`), delay).unref()
    })
    routesDir = await makeRoutesDir({ 'slow.yaml': `routes:\n  - name: slow\n    prefix: /slow\n    upstreams: [${slow.url}]\n` })
    gateway = await spawnGateway(routesDir)
  })
  afterAll(async () => {
    await gateway?.stop('SIGKILL')
    await slow?.close()
  })

  it('SIGHUP forces a reload and the gateway keeps serving', async () => {
    await writeFile(join(routesDir, 'more.yaml'), `routes:\n  - name: more\n    prefix: /more\n    upstreams: [${slow.url}]\n`)
    gateway.child.kill('SIGHUP')
    await waitFor(() => gateway.output().includes('SIGHUP: reloading routes'), { what: 'the SIGHUP log line' })
    await waitFor(async () => (await (await request(`${gateway.url}/more`)).body.text()) === 'done after 0', { what: '/more to route' })
  })

  it('SIGTERM drains the request in flight, then exits 0, a status page open or not', async () => {
    // An open page's feed never ends by itself: it must not hold the exit.
    let feed = ''
    const page = get(`${gateway.adminUrl}/admin/events`, (res) => res.on('data', (chunk: Buffer) => (feed += chunk.toString())).on('error', () => undefined))
    page.on('error', () => undefined)
    await waitFor(() => feed.includes('event: snapshot'), { what: 'the status feed to stream' })
    const inFlight = request(`${gateway.url}/slow?ms=700`)
    await waitFor(() => slow.requests.some((r) => r.url.includes('ms=700')), { what: 'the request to reach the upstream' })
    gateway.child.kill('SIGTERM')
    const response = await inFlight
    expect(response.statusCode).toBe(200)
    expect(await response.body.text()).toBe('done after 700')
    // the answered request's kept-alive connection does not hold the exit until the drain timeout (25 s)
    const answered = Date.now()
    expect(await gateway.exited).toBe(0)
    expect(Date.now() - answered).toBeLessThan(5_000)
    await expect(request(`${gateway.url}/slow`)).rejects.toThrow()
  })
})

describe('SIGTERM behind a load balancer', () => {
  it('fails readiness first, keeps answering every request that arrives during the shutdown delay, then exits 0', async () => {
    const upstream = await startUpstream('up')
    // The delay must outlast the readiness check and the 20 connections below on a loaded CI machine: at 1 s the last
    // connection once came after it and, as it should then, got no answer.
    const gateway = await spawnGateway(await makeRoutesDir({ 'r.yaml': `routes:\n  - name: up\n    prefix: /up\n    upstreams: [${upstream.url}]\n` }), { PORTICO_SHUTDOWN_DELAY: '4s' })
    try {
      gateway.child.kill('SIGTERM')
      await waitFor(() => gateway.output().includes('still serving while load balancers catch up'), { what: 'the shutdown to begin' })
      const ready = await request(`${gateway.adminUrl}/readyz`)
      await ready.body.dump()
      expect(ready.statusCode).toBe(503)
      // 20 clients that connect only now, each on a new connection, the way a load balancer's late traffic comes
      const { port } = new URL(gateway.url)
      const answers = await Promise.all(Array.from({ length: 20 }, () => rawExchange(Number(port), 'GET /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')))
      expect(answers.map((a) => statusesOf(a.text))).toEqual(Array(20).fill([200]))
      expect(await gateway.exited).toBe(0)
    } finally {
      await gateway.stop('SIGKILL')
      await upstream.close()
    }
  })
})
