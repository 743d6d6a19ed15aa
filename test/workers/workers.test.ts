import { createHash } from 'node:crypto'
import { createServer, get, request as httpRequest, type ServerResponse } from 'node:http'
import { readFileSync, writeFileSync } from 'node:fs'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Client, request } from 'undici'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { workersListening } from '../../src/workers/listening.js'
import { registerTtlInstance } from '../support/consul.js'
import { makeRoutesDir, runCli, spawnGateway, type GatewayProcess } from '../support/gateway.js'
import { windowTotal } from '../support/history.js'
import { waitFor } from '../support/poll.js'
import { freePort } from '../support/ports.js'
import { routeFile } from '../support/routes.js'
import { startUpstream, type Upstream } from '../support/upstream.js'

/** A GET on a connection of its own: new connections are spread over the workers (by the kernel, or node:cluster). */
function freshGet(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    get(url, { agent: false }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    }).on('error', reject)
  })
}

/** A fresh-connection GET that gives up after 3 s: a connection handed to a dead worker hangs rather than fails. */
function timedGet(url: string): Promise<number | string> {
  return new Promise((resolve) => {
    const request = get(url, { agent: false, timeout: 3_000 }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    request.on('timeout', () => {
      request.destroy()
      resolve('no answer within 3 s')
    })
    request.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message))
  })
}

const workerPids = (output: string): number[] =>
  output
    .split('\n')
    .filter((line) => line.includes('"worker is serving"'))
    .map((line) => (JSON.parse(line) as { pid: number }).pid)

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/**
 * The kernel setting the README asks for with `--workers` (per network namespace): with it, and a Node that has
 * reusePort, each worker listens itself. Set for the suite where the test may (root), and put back after.
 */
const MIGRATE_SETTING = '/proc/sys/net/ipv4/tcp_migrate_req'
function allowMigration(): () => void {
  try {
    const before = readFileSync(MIGRATE_SETTING, 'utf8').trim()
    writeFileSync(MIGRATE_SETTING, '1')
    return () => writeFileSync(MIGRATE_SETTING, before)
  } catch {
    return () => undefined
  }
}

describe('portico start --workers 2', () => {
  let upstream: Upstream
  let canary: Upstream
  let failing: Upstream
  let holding: Upstream
  const held: ServerResponse[] = []
  let gateway: GatewayProcess
  let logDir: string
  let routesDir: string
  let restoreMigration = (): void => undefined
  beforeAll(async () => {
    restoreMigration = allowMigration()
    upstream = await startUpstream('w')
    canary = await startUpstream('canary')
    failing = await startUpstream('failing', (_req, res) => res.writeHead(500).end())
    holding = await startUpstream('holding', (_req, res) => void held.push(res))
    logDir = await mkdtemp(join(tmpdir(), 'portico-workers-'))
    const routes = (routesDir = await makeRoutesDir({
      'plain.yaml': routeFile('plain', '/plain', upstream.url),
      'sticky.yaml': `routes:\n  - name: sticky\n    prefix: /sticky\n    split:\n      - { upstreams: ["${upstream.url}"], weight: 50, name: main }\n      - { upstreams: ["${canary.url}"], weight: 50, name: canary }\n    stickyOn: cookie:session\n`,
      'limited.yaml': routeFile('limited', '/limited', upstream.url, 'rateLimit: { limit: 10, window: 1m }'),
      'broken.yaml': routeFile('broken', '/broken', failing.url, 'circuitBreaker: { volumeThreshold: 4, errorThresholdPercentage: 50, resetTimeout: 1m }'),
      'held.yaml': routeFile('held', '/held', holding.url, 'concurrencyLimit: { limit: 2 }'),
      'consumers.yaml': `consumers:\n  - name: acme\n    apiKeys: [sha256:${createHash('sha256').update('pk_workers').digest('hex')}]\n    rateLimit: { limit: 3, window: 1m }\n`,
      'keyed.yaml': routeFile('keyed', '/keyed', upstream.url, 'auth: { apiKey: {} }', 'rateLimit: { key: consumer, limit: 1, window: 1m }'),
    }))
    gateway = await spawnGateway(routes, { PORTICO_ACCESS_LOG: join(logDir, 'access.log') }, ['--workers', '2'])
  })
  afterAll(async () => {
    await gateway?.stop()
    await upstream?.close()
    await canary?.close()
    await failing?.close()
    for (const res of held) res.end()
    await holding?.close()
    await rm(logDir, { recursive: true, force: true })
    restoreMigration()
  })

  /** Whether this gateway's workers listen themselves, as its primary said; checked against what this machine allows. */
  const listenThemselves = (): boolean => {
    const said = /"listening":"([^"]*)"/.exec(gateway.output())?.[1] ?? ''
    expect(said).toBe(workersListening().why)
    return said.startsWith('each worker listens')
  }

  it('serves on one port from two workers, which share one rate limit exactly without Redis', async () => {
    const statuses: number[] = []
    for (let i = 0; i < 30; i++) statuses.push(await freshGet(`${gateway.url}/limited/x`))
    expect(statuses.filter((s) => s === 200)).toHaveLength(10)
    expect(statuses.filter((s) => s === 429)).toHaveLength(20)
    // the access log says which worker served: both did
    const lines = await waitFor(async () => {
      const text = await readFile(join(logDir, 'access.log'), 'utf8').catch(() => '')
      const found = text.split('\n').filter((l) => l.includes('"route":"limited"'))
      return found.length === 30 ? found : undefined
    }, { timeoutMs: 5_000, what: 'the access log lines (flushed every second)' })
    expect(new Set(lines.map((l) => (JSON.parse(l) as { worker: number }).worker)).size).toBe(2)
    // the status page's history, read through one worker, holds both workers' requests and refusals
    await waitFor(async () => {
      const view = (await (await request(`${gateway.adminUrl}/admin/routes/limited/history`)).body.json()) as { requests: (number | null)[]; refusals: Record<string, (number | null)[]> }
      return windowTotal(view.requests) === 30 && windowTotal(view.refusals.rate_limited) === 20
    }, { timeoutMs: 15_000, what: 'the history to sum the host\'s workers' })
  })

  it('keeps a sticky client on one split target whichever worker takes its connection', async () => {
    const upstreamOf = (session: string) =>
      new Promise<string>((resolve, reject) => {
        get(`${gateway.url}/sticky/x`, { agent: false, headers: { cookie: `theme=dark; session=${session}` } }, (res) => {
          let text = ''
          res.on('data', (chunk: Buffer) => (text += chunk.toString()))
          res.on('end', () => resolve((JSON.parse(text) as { upstream: string }).upstream))
        }).on('error', reject)
      })
    const sessions = Array.from({ length: 40 }, (_, i) => `s-${i}`)
    // each session four times, each on a connection of its own, which may reach either worker
    const seen = new Map<string, Set<string>>()
    for (let round = 0; round < 4; round++)
      for (const session of sessions) {
        const targets = seen.get(session) ?? new Set<string>()
        targets.add(await upstreamOf(session))
        seen.set(session, targets)
      }
    expect([...seen.values()].filter((targets) => targets.size !== 1)).toEqual([])
    const sides = [...seen.values()].map((targets) => [...targets][0])
    expect(new Set(sides)).toEqual(new Set(['w', 'canary']))
    const lines = await waitFor(async () => {
      const text = await readFile(join(logDir, 'access.log'), 'utf8').catch(() => '')
      const found = text.split('\n').filter((l) => l.includes('"route":"sticky"'))
      return found.length === 160 ? found : undefined
    }, { timeoutMs: 5_000, what: 'the access log lines (flushed every second)' })
    const logged = lines.map((l) => JSON.parse(l) as { worker: number; target: string })
    expect(new Set(logged.map((l) => l.worker)).size).toBe(2)
    expect(new Set(logged.map((l) => l.target))).toEqual(new Set(['main', 'canary']))
  })

  it('hands every worker the consumers the primary read; a consumer\'s own limit holds for the host', async () => {
    const keyed = (key?: string) =>
      new Promise<number>((resolve, reject) => {
        get(`${gateway.url}/keyed/x`, { agent: false, headers: key === undefined ? {} : { 'x-api-key': key } }, (res) => {
          res.resume()
          res.on('end', () => resolve(res.statusCode ?? 0))
        }).on('error', reject)
      })
    const statuses: number[] = []
    for (let i = 0; i < 8; i++) statuses.push(await keyed('pk_workers'))
    expect(statuses.filter((s) => s === 200)).toHaveLength(3)
    expect(statuses.filter((s) => s === 429)).toHaveLength(5)
    expect(await Promise.all([keyed(), keyed('pk_wrong')])).toEqual([401, 401])
  })

  it('aggregates the workers\' metrics on the admin port', async () => {
    const text = await (await request(`${gateway.adminUrl}/metrics`)).body.text()
    const sample = (name: string) => Number(text.split('\n').find((l) => l.startsWith(name))?.split(' ').at(-1))
    expect(sample('portico_requests_total{route="limited",status="200"}')).toBe(10)
    expect(sample('portico_requests_total{route="limited",status="429"}')).toBe(20)
    // a gauge the workers agree on is not summed
    expect(sample('portico_route_table_version')).toBe(1)
  })

  it('opens a breaker on every worker when one worker\'s breaker opens, without Redis', async () => {
    // one kept-alive connection: one worker sees every failure, the other none
    const one = new Client(gateway.url)
    await waitFor(async () => (await one.request({ method: 'GET', path: '/broken/x' }).then(async (r) => (await r.body.dump(), r.statusCode))) === 503, { what: 'a breaker to open' })
    await one.close()
    const reached = failing.requests.length
    // new connections go to both workers in turn: none of them calls the upstream any more
    const statuses = await Promise.all(Array.from({ length: 10 }, () => freshGet(`${gateway.url}/broken/x`)))
    expect(statuses).toEqual(Array(10).fill(503))
    expect(failing.requests.length).toBe(reached)
  })

  it('holds a concurrency limit for the host without Redis', async () => {
    const answers = Array.from({ length: 6 }, () => freshGet(`${gateway.url}/held/x`))
    const settled: number[] = []
    for (const a of answers) void a.then((s) => settled.push(s))
    await waitFor(() => held.length === 2 && settled.length === 4, { what: 'two held upstream and four refused' })
    expect(settled).toEqual([503, 503, 503, 503])
    for (const res of held.splice(0)) res.end('ok')
    expect((await Promise.all(answers)).filter((s) => s === 200)).toHaveLength(2)
    // the slots came back
    const again = Array.from({ length: 2 }, () => freshGet(`${gateway.url}/held/x`))
    await waitFor(() => held.length === 2, { what: 'both slots free again' })
    for (const res of held.splice(0)) res.end('ok')
    expect(await Promise.all(again)).toEqual([200, 200])
  })

  it('reads the route files once for the host: a bad file is reported by the primary alone, and every worker serves on', async () => {
    await writeFile(join(routesDir, 'bad.yaml'), 'routes:\n  - name: bad\n    prefix: nope\n')
    const refusals = () => gateway.output().split('\n').filter((line) => line.includes('bad.yaml:'))
    await waitFor(() => refusals().length > 0, { what: 'the refusal' })
    // a later table reaches every worker: each has had the bad file's table before it
    await writeFile(join(routesDir, 'later.yaml'), routeFile('later', '/later', upstream.url))
    await waitFor(async () => (await Promise.all(Array.from({ length: 6 }, () => freshGet(`${gateway.url}/later/x`)))).every((s) => s === 200), { what: 'both workers to serve the later route' })
    // the primary's (one per table it built while the file was bad), none from a worker
    expect(refusals().filter((line) => line.includes('"worker"'))).toEqual([])
    expect(await Promise.all(Array.from({ length: 4 }, () => freshGet(`${gateway.url}/plain/x`)))).toEqual([200, 200, 200, 200])
    await rm(join(routesDir, 'bad.yaml'))
  })

  it('answers 502 worker_unreachable within its bound when the workers hang, for an action and for a read, and answers again once they run', async () => {
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0)
        return true
      } catch {
        return false
      }
    }
    const workers = workerPids(gateway.output()).filter(alive)
    expect(workers).toHaveLength(2)
    for (const pid of workers) process.kill(pid, 'SIGSTOP')
    try {
      const started = Date.now()
      const action = await request(`${gateway.adminUrl}/admin/routes/plain/breaker`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ state: 'auto' }) })
      expect([action.statusCode, action.headers['content-type'], ((await action.body.json()) as { code: string }).code]).toEqual([502, 'application/problem+json', 'worker_unreachable'])
      const read = await request(`${gateway.adminUrl}/admin/routes`)
      expect([read.statusCode, ((await read.body.json()) as { code: string }).code]).toEqual([502, 'worker_unreachable'])
      expect(Date.now() - started).toBeLessThan(15_000)
    } finally {
      for (const pid of workers) process.kill(pid, 'SIGCONT')
    }
    await waitFor(async () => (await request(`${gateway.adminUrl}/admin/routes`).then(async (r) => (await r.body.dump(), r.statusCode))) === 200, { what: 'the admin port to answer once the workers run' })
    expect(await Promise.all(Array.from({ length: 4 }, () => freshGet(`${gateway.url}/plain/x`)))).toEqual([200, 200, 200, 200])
  }, 30_000)

  it('replaces a worker that dies, even one streaming the status feed through the primary; the others serve meanwhile', async () => {
    // the status feed goes through the primary to one worker: that one dies mid-stream
    let feed = ''
    const stream = get(`${gateway.adminUrl}/admin/events`, (res) => res.on('data', (chunk: Buffer) => (feed += chunk.toString())).on('error', () => undefined))
    stream.on('error', () => undefined)
    const first = await waitFor(() => /^event: snapshot\ndata: (.*)$/m.exec(feed)?.[1], { what: 'the first snapshot' })
    const victim = (JSON.parse(first) as { fleet: { pid: number }[] }).fleet[0]?.pid
    expect(workerPids(gateway.output())).toContain(victim)
    process.kill(victim as number, 'SIGKILL')
    await waitFor(() => gateway.output().includes('worker died; starting another') && workerPids(gateway.output()).length === 3, { timeoutMs: 15_000, what: 'a new worker' })
    const statuses = await Promise.all(Array.from({ length: 20 }, () => freshGet(`${gateway.url}/plain/x`)))
    expect(statuses).toEqual(Array(20).fill(200))
    stream.destroy()
    expect(gateway.child.exitCode).toBeNull()
    const health = await request(`${gateway.adminUrl}/healthz`)
    await health.body.dump()
    expect(health.statusCode).toBe(200)
  })

  it('loses none of 200 new connections opened right after a worker is SIGKILLed under load, when each worker listens itself', async (context) => {
    if (!listenThemselves()) return context.skip('node:cluster schedules here: its primary may hand a connection to the dead worker')
    const serving = workerPids(gateway.output()).filter(alive)
    expect(serving).toHaveLength(2)
    // New connections keep coming while the worker dies; those opened once it was killed must all be answered.
    let killed = false
    let loaded = 0
    const afterKill: (number | string)[] = []
    const load = Array.from({ length: 4 }, async () => {
      while (afterKill.length < 200) {
        const sentAfterKill = killed
        const status = await timedGet(`${gateway.url}/plain/x`)
        if (sentAfterKill) afterKill.push(status)
        else loaded++
      }
    })
    await waitFor(() => loaded >= 20, { what: 'load on both workers' })
    process.kill(serving[0] as number, 'SIGKILL')
    killed = true
    // What the kernel queued on the dead worker's socket moves to the other one; nothing waits on the primary.
    await Promise.all(load)
    expect(afterKill.filter((status) => status !== 200)).toEqual([])
    await waitFor(() => workerPids(gateway.output()).filter(alive).length === 2, { timeoutMs: 15_000, what: 'the worker to be replaced' })
  })

  it('refuses to start a second gateway on a port the workers of one hold (SO_REUSEPORT would share it silently)', async (context) => {
    if (!listenThemselves()) return context.skip('node:cluster schedules here: the primary binds the port, and a second one fails to')
    const port = new URL(gateway.url).port
    const second = runCli(['start', '--routes', routesDir, '--port', port, '--admin-port', '0', '--host', '127.0.0.1', '--workers', '2'])
    let output = ''
    second.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()))
    second.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()))
    expect(await new Promise<number | null>((resolve) => second.once('exit', resolve))).toBe(1)
    expect(output).toContain(`portico: port ${port} on 127.0.0.1 is already in use`)
    expect(output).not.toContain('worker is serving')
  }, 20_000)

  it('replaces every worker on SIGUSR2 without failing a request under load', async () => {
    const before = workerPids(gateway.output()).length
    let stop = false
    const failures: string[] = []
    let served = 0
    const loop = async () => {
      while (!stop) {
        try {
          const response = await request(`${gateway.url}/plain/x`)
          await response.body.text()
          if (response.statusCode === 200) served++
          else failures.push(String(response.statusCode))
        } catch (error) {
          failures.push((error as Error).message)
        }
      }
    }
    const loops = Array.from({ length: 4 }, loop)
    await waitFor(() => served > 50, { what: 'traffic to flow' })
    gateway.child.kill('SIGUSR2')
    await waitFor(() => gateway.output().includes('SIGUSR2: every worker replaced'), { timeoutMs: 30_000, what: 'the workers to be replaced' })
    const after = served
    await waitFor(() => served > after + 50, { what: 'traffic on the new workers' })
    stop = true
    await Promise.all(loops)
    expect(workerPids(gateway.output()).length).toBe(before + 2)
    expect(failures).toEqual([])
  })

  it('drains every worker on SIGTERM and exits 0, a status page open through the primary or not', async () => {
    let feed = ''
    const page = get(`${gateway.adminUrl}/admin/events`, (res) => res.on('data', (chunk: Buffer) => (feed += chunk.toString())).on('error', () => undefined))
    page.on('error', () => undefined)
    await waitFor(() => feed.includes('event: snapshot'), { what: 'the status feed to stream' })
    const stopping = Date.now()
    expect(await gateway.stop('SIGTERM')).toBe(0)
    expect(Date.now() - stopping).toBeLessThan(10_000)
    for (const pid of workerPids(gateway.output())) expect(() => process.kill(pid, 0)).toThrow()
  })
})

describe('portico start --workers 2 with Consul', () => {
  const consul = inject('consulAddress')
  const service = `wsvc-${process.pid}`

  it('holds one blocking query per service for the host, in the primary, and every worker routes to what it finds', async () => {
    const upstream = await startUpstream('consul-found')
    const instance = await registerTtlInstance(consul, { name: service, id: `${service}-1`, port: upstream.port })
    // Between the gateway and the agent: counts the queries for the service that are open at once.
    const agent = new URL(consul)
    let open = 0
    let mostOpen = 0
    const counting = createServer((req, res) => {
      const watching = req.url?.startsWith(`/v1/health/service/${service}`) ?? false
      if (watching) mostOpen = Math.max(mostOpen, ++open)
      const forwarded = httpRequest({ host: agent.hostname, port: agent.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers)
        answer.pipe(res)
      })
      forwarded.on('error', () => res.destroy())
      res.on('close', () => {
        if (watching) open--
        forwarded.destroy()
      })
      req.pipe(forwarded)
    })
    await new Promise<void>((resolve) => counting.listen(0, '127.0.0.1', resolve))
    const routes = await makeRoutesDir({ 's.yaml': `routes:\n  - name: s\n    prefix: /s\n    service: ${service}\n` })
    const gateway = await spawnGateway(routes, { CONSUL_HTTP_ADDR: `127.0.0.1:${(counting.address() as { port: number }).port}` }, ['--workers', '2'])
    try {
      await waitFor(async () => (await Promise.all(Array.from({ length: 6 }, () => freshGet(`${gateway.url}/s/x`)))).every((s) => s === 200), { timeoutMs: 20_000, what: 'both workers to route to the instance' })
      expect(mostOpen).toBe(1)
      // a change in Consul reaches every worker
      await instance.fail()
      await waitFor(async () => (await Promise.all(Array.from({ length: 6 }, () => freshGet(`${gateway.url}/s/x`)))).every((s) => s === 503), { timeoutMs: 20_000, what: 'both workers to see no passing instance' })
      expect(mostOpen).toBe(1)
    } finally {
      await gateway.stop()
      await instance.deregister()
      counting.closeAllConnections()
      counting.close()
      await upstream.close()
    }
  })
})

describe('portico start --workers 2 when the primary is killed', () => {
  let holding: Upstream
  const held: ServerResponse[] = []
  let gateway: GatewayProcess
  beforeAll(async () => {
    holding = await startUpstream('holding', (_req, res) => void held.push(res))
    const routes = await makeRoutesDir({ 'held.yaml': routeFile('held', '/held', holding.url) })
    gateway = await spawnGateway(routes, { PORTICO_DRAIN_TIMEOUT: '20s' }, ['--workers', '2'])
  })
  afterAll(async () => {
    for (const pid of workerPids(gateway?.output() ?? '')) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {
        // gone already
      }
    }
    for (const res of held) res.end()
    await holding?.close()
  })

  it('lets its workers finish the requests they hold, then exit (node would end them at once)', async () => {
    const answers = Array.from({ length: 4 }, (_, i) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        get(`${gateway.url}/held/${i}`, { agent: false }, (res) => {
          let body = ''
          res.on('data', (chunk: Buffer) => (body += chunk.toString()))
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
        }).on('error', reject)
      }),
    )
    await waitFor(() => held.length === 4, { timeoutMs: 10_000, what: 'the four requests to reach the upstream' })
    const pids = workerPids(gateway.output())
    expect(pids).toHaveLength(2)
    gateway.child.kill('SIGKILL')
    await gateway.exited
    // The workers outlive their primary while they hold requests.
    await waitFor(() => gateway.output().includes('the primary is gone'), { timeoutMs: 5_000, what: 'the workers to notice' })
    expect(pids.some(alive)).toBe(true)
    for (const res of held.splice(0)) res.end('finished')
    expect(await Promise.all(answers)).toEqual(Array(4).fill({ status: 200, body: 'finished' }))
    await waitFor(() => !pids.some(alive), { timeoutMs: 15_000, what: 'the orphaned workers to exit' })
  })
})

describe('portico start --workers 2 when its workers die with messages on the way to them', () => {
  let upstream: Upstream
  let gateway: GatewayProcess
  beforeAll(async () => {
    upstream = await startUpstream('w')
    // No traffic and no access log: an idle worker writes nothing but its messages to the primary. A port of its own:
    // with node:cluster scheduling and port 0, workers started after all died would be handed a new one.
    const routes = await makeRoutesDir({ 'plain.yaml': routeFile('plain', '/plain', upstream.url) })
    gateway = await spawnGateway(routes, {}, ['--workers', '2', '--port', String(await freePort())])
  })
  afterAll(async () => {
    await gateway?.stop()
    await upstream?.close()
  })

  it('stays up when a send to a worker that just died fails, and replaces the workers', async () => {
    // Each worker sends its traffic slot every 5 s, and the primary passes it on to the others. With the primary
    // stopped, a worker sends, then both die: once the primary runs again it reads that message before it sees the
    // other worker gone, and its send to that worker fails (EPIPE). That must not take the host down.
    // What a process wrote: bytes and write calls. libuv's wake-ups are 8-byte writes (an eventfd); a message is longer.
    const written = (pid: number) => {
      const io = readFileSync(`/proc/${pid}/io`, 'utf8')
      return { bytes: Number(/wchar: (\d+)/.exec(io)?.[1]), calls: Number(/syscw: (\d+)/.exec(io)?.[1]) }
    }
    const sentMore = (pid: number, before: ReturnType<typeof written>) => {
      const now = written(pid)
      return now.bytes - before.bytes > 8 * (now.calls - before.calls)
    }
    const workers = workerPids(gateway.output()).filter(alive)
    expect(workers).toHaveLength(2)
    const primary = gateway.child.pid as number
    process.kill(primary, 'SIGSTOP')
    try {
      const before = workers.map(written)
      await waitFor(() => workers.every((pid, i) => sentMore(pid, before[i] as ReturnType<typeof written>)), { timeoutMs: 15_000, what: 'both workers to send the primary their slot' })
      for (const pid of workers) process.kill(pid, 'SIGKILL')
      // Dead, not yet reaped by the stopped primary, and every thread gone: only then are their sockets closed.
      await waitFor(() => workers.every((pid) => /State:\s+Z[\s\S]*Threads:\s+1\n/.test(readFileSync(`/proc/${pid}/status`, 'utf8'))), { what: 'both workers to be gone' })
    } finally {
      process.kill(primary, 'SIGCONT')
    }
    await waitFor(() => gateway.child.exitCode !== null || (workers.every((pid) => !alive(pid)) && workerPids(gateway.output()).filter(alive).length === 2), { timeoutMs: 15_000, what: 'both workers to be replaced' })
    expect(gateway.child.exitCode).toBeNull()
    expect(gateway.output()).toContain('"a message to a worker was lost"')
    expect(await Promise.all(Array.from({ length: 10 }, () => freshGet(`${gateway.url}/plain/x`)))).toEqual(Array(10).fill(200))
  })
})
