// `npm run bench`: throughput and latency side by side in one run: straight to the upstream, through a minimal
// @fastify/http-proxy app, through Portico, and through nginx when it is installed. Then route matching with 10 and
// 10 000 routes. Ratios, not absolute numbers, are what to compare between machines.
import autocannon from 'autocannon'
import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort } from '../test/support/ports.js'
import { parseRouteFile, type RouteDefinition } from '../src/routes/parse.js'
import { RouteTable } from '../src/routes/route-table.js'

const root = new URL('..', import.meta.url).pathname
const seconds = Number(process.env.BENCH_SECONDS ?? 3)
const roundCount = Number(process.env.BENCH_ROUNDS ?? 5)
const connections = Number(process.env.BENCH_CONNECTIONS ?? 50)
const children: ChildProcess[] = []

function start(command: string, args: string[], ready: RegExp, env: Record<string, string> = {}): Promise<{ child: ChildProcess; match: RegExpMatchArray }> {
  const child = spawn(command, args, { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  children.push(child)
  let output = ''
  return new Promise((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      output += chunk.toString()
      const match = output.match(ready)
      if (match) resolve({ child, match })
    }
    child.stdout?.on('data', onData)
    child.stderr?.on('data', onData)
    child.once('exit', (code) => reject(new Error(`${command} exited with ${code}: ${output}`)))
  })
}

interface Round {
  rps: number
  p50: number
  p99: number
  errors: number
}

async function load(url: string): Promise<Round> {
  const result = await autocannon({ url, connections, duration: seconds })
  return { rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, errors: result.errors + result.non2xx }
}

const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? 0

async function until(probe: () => Promise<boolean>): Promise<void> {
  for (const deadline = Date.now() + 20_000; Date.now() < deadline; await new Promise((resolve) => setTimeout(resolve, 50))) {
    if (await probe().catch(() => false)) return
  }
  throw new Error('a benchmark target did not come up within 20 s')
}

function nginxConfig(upstreamPort: number, port: number): string {
  const dir = mkdtempSync(join(tmpdir(), 'portico-bench-nginx-'))
  writeFileSync(
    join(dir, 'nginx.conf'),
    `daemon off; worker_processes 1; pid ${dir}/nginx.pid; error_log ${dir}/error.log;
events { worker_connections 1024; }
http { access_log off;
  upstream app { server 127.0.0.1:${upstreamPort}; keepalive 64; }
  server { listen 127.0.0.1:${port}; location /api/ { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; } } }`,
  )
  return dir
}

function matchCost(routeCount: number): number {
  const routes: RouteDefinition[] = []
  for (let i = 0; i < routeCount; i++) {
    const { routes: parsed } = parseRouteFile('bench.yaml', `routes:\n  - name: r${i}\n    prefix: /svc${i}/v1\n    service: s${i}\n`)
    routes.push(...parsed)
  }
  const table = new RouteTable(routes)
  const paths = Array.from({ length: 1000 }, (_, i) => `/svc${i % routeCount}/v1/items/${i}/detail`)
  const iterations = 2_000_000
  let found = 0
  const started = process.hrtime.bigint()
  for (let i = 0; i < iterations; i++) if (table.match(paths[i % paths.length] as string)) found++
  const ns = Number(process.hrtime.bigint() - started) / iterations
  if (found !== iterations) throw new Error('every path should match')
  return ns
}

try {
  const upstream = await start(process.execPath, ['bench/upstream.js', '0'], /listening (\d+)/)
  const upstreamPort = Number(upstream.match[1])
  const upstreamUrl = `http://127.0.0.1:${upstreamPort}`
  const minimal = await start(process.execPath, ['bench/minimal-proxy.js', upstreamUrl, '0'], /listening (\d+)/)
  const routesDir = mkdtempSync(join(tmpdir(), 'portico-bench-routes-'))
  writeFileSync(
    join(routesDir, 'bench.yaml'),
    `routes:
  - name: api
    prefix: /api
    upstreams: [${upstreamUrl}]
  - name: chain
    prefix: /chain
    upstreams: [${upstreamUrl}]
    rateLimit: { key: ip, limits: [{ limit: 1000000000, window: 1h }] }
    circuitBreaker: { volumeThreshold: 1000 }
`,
  )
  // The full chain's limits and breaker live in a Redis of the bench's own.
  const redisPort = await freePort()
  children.push(spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' }))
  // Two Portico processes, one per target, so that the paired runs below compare two processes alike. Access logs off
  // (warn level), as a throughput-minded operator would run it; readiness comes from the admin port.
  const startPortico = async (): Promise<number> => {
    const [port, adminPort] = [await freePort(), await freePort()]
    children.push(spawn(process.execPath, ['dist/cli.js', 'start', '--routes', routesDir, '--port', String(port), '--admin-port', String(adminPort), '--host', '127.0.0.1', '--log-level', 'warn'], { cwd: root, stdio: 'inherit', env: { ...process.env, REDIS_URL: `redis://127.0.0.1:${redisPort}` } }))
    await until(async () => {
      const ready = (await (await fetch(`http://127.0.0.1:${adminPort}/readyz`)).json()) as { components: { state: { status: string } } }
      return ready.components.state.status === 'ok'
    })
    return port
  }
  const [plainPort, chainPort] = [await startPortico(), await startPortico()]
  const targets: [string, string][] = [
    ['direct', `${upstreamUrl}/api/items`],
    ['fastify-http-proxy', `http://127.0.0.1:${minimal.match[1]}/api/items`],
    ['portico', `http://127.0.0.1:${plainPort}/api/items`],
    ['portico+redis chain', `http://127.0.0.1:${chainPort}/chain/items`],
  ]
  let nginx: string | undefined
  try {
    nginx = execFileSync('bash', ['-c', 'command -v nginx || ls /usr/sbin/nginx'], { encoding: 'utf8' }).trim().split('\n')[0]
  } catch {
    console.log('nginx not installed: skipping it (scripts/bench.sh installs it when it can)')
  }
  if (nginx) {
    const port = await freePort()
    const dir = nginxConfig(upstreamPort, port)
    const child = spawn(nginx, ['-c', join(dir, 'nginx.conf'), '-p', dir], { stdio: 'ignore' })
    children.push(child)
    await until(async () => (await fetch(`http://127.0.0.1:${port}/api/items`)).ok)
    targets.push(['nginx', `http://127.0.0.1:${port}/api/items`])
  }

  // Two cores carry the load generator, the upstream and the proxy: single runs swing by ±20 %. Rounds interleave the
  // targets so each sees the same conditions, and the median round counts.
  for (const [, url] of targets) await autocannon({ url, connections, duration: 1 }) // warm pools and JIT
  const rounds = new Map<string, Round[]>(targets.map(([name]) => [name, []]))
  for (let round = 0; round < roundCount; round++) for (const [name, url] of targets) rounds.get(name)?.push(await load(url))
  const results = targets.map(([name]) => {
    const runs = rounds.get(name) ?? []
    return { name, rps: median(runs.map((r) => r.rps)), p50: median(runs.map((r) => r.p50)), p99: median(runs.map((r) => r.p99)), errors: runs.reduce((n, r) => n + r.errors, 0) }
  })
  const baseline = results.find((r) => r.name === 'fastify-http-proxy')?.rps ?? 1
  const plain = results.find((r) => r.name === 'portico')?.rps ?? 1
  console.log(`\n${connections} connections, median of ${roundCount} interleaved rounds of ${seconds} s, one machine (${process.version})`)
  console.log('target                 req/s     p50 ms  p99 ms  errors  vs fastify-http-proxy  vs portico')
  for (const r of results) {
    console.log(
      `${r.name.padEnd(22)} ${r.rps.toFixed(0).padStart(8)}  ${String(r.p50).padStart(6)}  ${String(r.p99).padStart(6)}  ${String(r.errors).padStart(6)}  ${(r.rps / baseline).toFixed(2).padStart(20)}  ${(r.rps / plain).toFixed(2).padStart(10)}`,
    )
  }
  // The machine's speed itself swings from second to second here, so the rounds above carry that noise into their
  // ratios. Paired runs load two targets at once, half the connections each: both see the same machine, and the
  // ratio of their req/s is the ratio of what a request costs each of them.
  const paired = async (baseline: string, candidate: string): Promise<number[]> => {
    const urlOf = (name: string): string => targets.find(([n]) => n === name)?.[1] ?? ''
    const ratios: number[] = []
    for (let round = 0; round < roundCount; round++) {
      const run = (url: string) => autocannon({ url, connections: connections / 2, duration: seconds })
      const [b, c] = await Promise.all([run(urlOf(baseline)), run(urlOf(candidate))])
      ratios.push(c.requests.average / b.requests.average)
    }
    return ratios
  }
  console.log(`\npaired runs (two targets loaded at once, ${connections / 2} connections each, median of ${roundCount} rounds of ${seconds} s)`)
  for (const [baseline, candidate] of [['fastify-http-proxy', 'portico'], ['portico', 'portico+redis chain']] as const) {
    const ratios = await paired(baseline, candidate)
    console.log(`${candidate} vs ${baseline}: ${median(ratios).toFixed(2)}  (rounds: ${ratios.map((r) => r.toFixed(2)).join(' ')})`)
  }

  const small = matchCost(10)
  const large = matchCost(10_000)
  console.log(`\nroute matching: ${small.toFixed(0)} ns with 10 routes, ${large.toFixed(0)} ns with 10 000 routes (ratio ${(large / small).toFixed(2)})`)
} finally {
  for (const child of children) child.kill('SIGTERM') // nginx's master takes its workers down on TERM, not on KILL
}
