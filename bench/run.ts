// `npm run bench`: throughput, latency and the proxy's CPU time per request side by side in one run: straight to the
// upstream, through a minimal @fastify/http-proxy app, through reply-from registered straight (the same engine without
// http-proxy's route wrapper), through fast-gateway, through fastify handing requests to
// undici's dispatch API with nothing else (the floor of the engine: bench/engine-floor.js), through Portico (plain route, access log
// off, tracing on, the full chain, cache hits from memory and from Redis, an API-key and a JWT route, each in a process of
// its own), and through nginx (plain, and proxy_cache hits) when it is installed. With h2load, TLS rows beside nginx
// doing the same (`ssl http2`): HTTPS over HTTP/1.1 and HTTP/2 on kept-alive connections, and a new connection (a full
// handshake) per request. Then route matching with 10 and 10 000 routes. Ratios, not absolute numbers, are what to
// compare between machines.
import autocannon from 'autocannon'
import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { createHash, generateKeyPairSync } from 'node:crypto'
import { availableParallelism, tmpdir } from 'node:os'
import { SignJWT } from 'jose'
import { join } from 'node:path'
import { freePort } from '../test/support/ports.js'
import { parseRouteFile, type RouteDefinition } from '../src/config/parse-route-file.js'
import { RouteTable } from '../src/config/route-table.js'
import { workersListening } from '../src/workers/listening.js'

const root = new URL('..', import.meta.url).pathname
const seconds = Number(process.env.BENCH_SECONDS ?? 3)
const roundCount = Number(process.env.BENCH_ROUNDS ?? 3)
// Runs of `roundCount` rounds each, one after the other: a figure is the median of the runs' medians, with its spread.
const runCount = Number(process.env.BENCH_RUNS ?? 3)
const connections = Number(process.env.BENCH_CONNECTIONS ?? 50)
const children: ChildProcess[] = []

/**
 * Where each process runs, with BENCH_PIN=1 (and `taskset`, two cores or more): the load side (this process's
 * autocannon, h2load, the upstream, Redis, the OTLP sink) on CPU 0, every single-process target on the others, the
 * two-worker targets (Portico's and nginx's) on every CPU, as a worker pool would run. A target then pays for no
 * share of the load generator's core, and its req/s is what one core of it serves. Off by default: on the 2-core
 * development machine it did not narrow the spread (the same process moved from 72 to 121 µs a request between
 * rounds pinned, 66 to 123 unpinned: the machine's own speed swings more than placement moves it).
 */
const placement = (() => {
  const cpus = availableParallelism()
  if (process.env.BENCH_PIN !== '1' || cpus < 2) return undefined
  try {
    execFileSync('taskset', ['-p', '-c', '0', String(process.pid)], { stdio: 'ignore' })
  } catch {
    return undefined
  }
  return { target: cpus === 2 ? '1' : `1-${cpus - 1}`, all: `0-${cpus - 1}` }
})()

type Place = 'load' | 'target' | 'all'

/** The command and arguments that run `command` on the CPUs of `place` (the load side inherits this process's). */
function placed(place: Place, command: string, args: string[]): [string, string[]] {
  return placement && place !== 'load' ? ['taskset', ['-c', placement[place], command, ...args]] : [command, args]
}

function start(place: Place, command: string, args: string[], ready: RegExp): Promise<{ child: ChildProcess; match: RegExpMatchArray }> {
  const child = spawn(...placed(place, command, args), { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] })
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
  /** CPU time the proxy's processes (its workers included) spent per request, in µs; NaN without one (direct). */
  cpuUs: number
}

/** User + system CPU time of a process and its descendants (nginx's and Portico's workers) so far, in ms (Linux /proc; NaN elsewhere). */
function cpuMs(pid: number | undefined): number {
  if (pid === undefined) return NaN
  try {
    // Fields 14 and 15 of /proc/<pid>/stat, in clock ticks of 10 ms; the command name (field 2) may hold spaces.
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ')
    const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(' ').filter(Boolean).map(Number)
    return (Number(fields[11]) + Number(fields[12])) * 10 + children.reduce((sum, child) => sum + cpuMs(child), 0)
  } catch {
    return NaN
  }
}

/** How a target is loaded: autocannon (HTTP/1.1), or h2load over TLS: kept-alive HTTP/1.1, HTTP/2, or a new connection per request. */
type LoadMode = 'http' | 'tls-h1' | 'tls-h2' | 'tls-new'

async function load(url: string, pid: number | undefined, headers?: Record<string, string>, mode: LoadMode = 'http'): Promise<Round> {
  const before = cpuMs(pid)
  if (mode !== 'http') {
    const result = h2load(url, mode)
    return { ...result, cpuUs: ((cpuMs(pid) - before) * 1000) / result.total }
  }
  const result = await autocannon({ url, connections, duration: seconds, headers })
  const cpuUs = ((cpuMs(pid) - before) * 1000) / result.requests.total
  return { rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, errors: result.errors + result.non2xx, cpuUs }
}

/**
 * h2load (nghttp2) for the TLS rows, as many requests in flight as autocannon keeps: `connections` HTTP/1.1
 * connections, or a tenth of them carrying ten HTTP/2 streams each; or batches of `connections` connections of one
 * request each (a full handshake per request) until the round's time is up. h2load reports no percentiles: p50 and
 * p99 show its mean time per request.
 */
function h2load(url: string, mode: Exclude<LoadMode, 'http'>): Omit<Round, 'cpuUs'> & { total: number } {
  const run = (args: string[]) => {
    const out = execFileSync('h2load', [...args, url], { encoding: 'utf8' })
    const done = /requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded/.exec(out)
    const mean = /time for request:\s+\S+\s+\S+\s+(\S+)/.exec(out)?.[1] ?? ''
    const meanMs = mean.endsWith('ms') ? Number(mean.slice(0, -2)) : mean.endsWith('us') ? Number(mean.slice(0, -2)) / 1000 : Number(mean.slice(0, -1)) * 1000
    return { total: Number(done?.[2] ?? 0), failed: Number(done?.[2] ?? 0) - Number(done?.[3] ?? 0), meanMs, seconds: Number(/finished in ([\d.]+)(m?s)/.exec(out)?.[1] ?? NaN) / (/finished in [\d.]+ms/.test(out) ? 1000 : 1) }
  }
  if (mode !== 'tls-new') {
    const r = run(mode === 'tls-h1' ? ['--h1', '-c', String(connections), '-m', '1', '-D', String(seconds)] : ['-c', String(Math.max(1, connections / 10)), '-m', '10', '-D', String(seconds)])
    return { rps: r.total / seconds, p50: r.meanMs, p99: r.meanMs, errors: r.failed, total: r.total }
  }
  let total = 0
  let failed = 0
  let busy = 0
  const means: number[] = []
  for (const end = Date.now() + seconds * 1000; Date.now() < end; ) {
    const r = run(['--h1', '-c', String(connections), '-n', String(connections), '-m', '1'])
    total += r.total
    failed += r.failed
    busy += r.seconds
    means.push(r.meanMs)
  }
  return { rps: total / busy, p50: median(means), p99: median(means), errors: failed, total }
}

const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? 0

async function until(probe: () => Promise<boolean>): Promise<void> {
  for (const deadline = Date.now() + 20_000; Date.now() < deadline; await new Promise((resolve) => setTimeout(resolve, 50))) {
    if (await probe().catch(() => false)) return
  }
  throw new Error('a benchmark target did not come up within 20 s')
}

function nginxConfig(upstreamPort: number, port: number, workers: number, tls?: { port: number; cert: string; key: string }): string {
  const dir = mkdtempSync(join(tmpdir(), 'portico-bench-nginx-'))
  writeFileSync(
    join(dir, 'nginx.conf'),
    // As root, nginx's worker would write its cache as nobody into a directory only root may enter.
    `daemon off; user ${process.getuid?.() === 0 ? 'root' : 'nobody'}; worker_processes ${workers}; pid ${dir}/nginx.pid; error_log ${dir}/error.log;
events { worker_connections 1024; }
http { access_log off;
  upstream app { server 127.0.0.1:${upstreamPort}; keepalive 64; }
  proxy_cache_path ${dir}/cache keys_zone=bench:1m;
  server { listen 127.0.0.1:${port};
    location /api/ { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
    location /cached/ { proxy_pass http://app/api/; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_cache bench; proxy_cache_valid 200 1h; } }
${tls ? `  server { listen 127.0.0.1:${tls.port} ssl http2; ssl_certificate ${tls.cert}; ssl_certificate_key ${tls.key}; ssl_protocols TLSv1.2 TLSv1.3;
    keepalive_requests 1000000; # nginx's default (1 000) sends GOAWAY mid-run, which h2load counts as failures; Portico sets no such cap
    location /api/ { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; } }\n` : ''}}`,
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
  const request = { method: 'GET', headers: { host: 'api.example.com' } }
  for (let i = 0; i < iterations; i++) if (table.match(paths[i % paths.length] as string, request)) found++
  const ns = Number(process.hrtime.bigint() - started) / iterations
  if (found !== iterations) throw new Error('every path should match')
  return ns
}

try {
  const upstream = await start('load', process.execPath, ['bench/upstream.js', '0'], /listening (\d+)/)
  const upstreamPort = Number(upstream.match[1])
  const upstreamUrl = `http://127.0.0.1:${upstreamPort}`
  const minimal = await start('target', process.execPath, ['bench/minimal-proxy.js', upstreamUrl, '0'], /listening (\d+)/)
  const replyFromOnly = await start('target', process.execPath, ['bench/minimal-reply-from.js', upstreamUrl, '0'], /listening (\d+)/)
  const fastGateway = await start('target', process.execPath, ['bench/fast-gateway.js', upstreamUrl, '0'], /listening (\d+)/)
  const engineFloor = await start('target', process.execPath, ['bench/engine-floor.js', upstreamUrl, '0'], /listening (\d+)/)
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
  // A file of its own: a baseline from before the cache refuses this one file and serves the others.
  writeFileSync(
    join(routesDir, 'cache.yaml'),
    `routes:
  - name: cached
    prefix: /cached
    upstreams: [${upstreamUrl}]
    rewritePrefix: /api
    cache: { ttl: 1h }
  - name: cached-redis
    prefix: /shared
    upstreams: [${upstreamUrl}]
    rewritePrefix: /api
    cache: { ttl: 1h, store: redis }
`,
  )
  // Auth: an API key of a consumer, and an RS256 token (made here, its public key in a file), the same for every request
  // (a cached token: what a client with a session sends).
  const apiKey = 'pk_bench-consumer-key'
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  writeFileSync(join(routesDir, 'bench-key.pem'), publicKey.export({ type: 'spki', format: 'pem' }) as string)
  const token = await new SignJWT({ sub: 'bench' }).setProtectedHeader({ alg: 'RS256' }).setIssuer('https://id.bench/').setExpirationTime('2h').sign(privateKey)
  writeFileSync(
    join(routesDir, 'auth.yaml'),
    `consumers:
  - name: bench
    apiKeys: [sha256:${createHash('sha256').update(apiKey).digest('hex')}]
routes:
  - name: keyed
    prefix: /keyed
    upstreams: [${upstreamUrl}]
    rewritePrefix: /api
    auth: { apiKey: {} }
  - name: tokens
    prefix: /tokens
    upstreams: [${upstreamUrl}]
    rewritePrefix: /api
    auth: { jwt: { issuer: "https://id.bench/", publicKeyFile: ${join(routesDir, 'bench-key.pem')}, algorithms: [RS256] } }
`,
  )
  // Traffic shaping: a route chosen by host beside a plain one at its prefix, split over two targets (the same upstream
  // under two names), with request and response header transforms.
  writeFileSync(
    join(routesDir, 'shaping.yaml'),
    `routes:
  - name: shaped
    prefix: /api
    hosts: [api.bench]
    rewritePrefix: /api
    split:
      - { upstreams: [${upstreamUrl}], weight: 90, name: stable }
      - { upstreams: [${upstreamUrl}], weight: 10, name: canary }
    requestHeaders: { set: { X-Gateway: portico, X-Request-Id: "\${requestId}" }, remove: [X-Debug] }
    responseHeaders: { set: { Strict-Transport-Security: "max-age=31536000" }, remove: [X-Powered-By] }
`,
  )
  // The full chain's limits and breaker live in a Redis of the bench's own.
  const redisPort = await freePort()
  children.push(spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' }))
  // Tracing exports to a sink of the bench's own that takes OTLP requests and drops them, as a collector would.
  const sink = await start('load', process.execPath, ['bench/otlp-sink.js', '0'], /listening (\d+)/)
  // One Portico process per target, so that each one's CPU time and JIT state are its own target's. As shipped: the
  // default log level, the access log on stdout (here /dev/null, at the same cost as a terminal or a pipe), metrics on,
  // tracing off; then the same with the access log off, and with tracing on (every request sampled). BENCH_BASELINE=
  // <another checkout, built> adds that build's plain and chain targets to the same run, for an A/B of a change.
  // Readiness comes from the admin port.
  const startPortico = async (cwd = root, env: Record<string, string> = {}, args: string[] = []): Promise<{ port: number; pid: number | undefined }> => {
    const [port, adminPort] = [await freePort(), await freePort()]
    const place = args.includes('--workers') ? 'all' : 'target'
    const child = spawn(...placed(place, process.execPath, ['dist/cli.js', 'start', '--routes', routesDir, '--port', String(port), '--admin-port', String(adminPort), '--host', '127.0.0.1', ...args]), { cwd, stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, REDIS_URL: `redis://127.0.0.1:${redisPort}`, ...env } })
    children.push(child)
    await until(async () => {
      const ready = (await (await fetch(`http://127.0.0.1:${adminPort}/readyz`)).json()) as { components: { state: { status: string } } }
      return ready.components.state.status === 'ok'
    })
    return { port, pid: child.pid }
  }
  const plainPortico = await startPortico()
  // The same build in a second process: what two identical targets differ by in this run is its noise floor.
  const twinPortico = await startPortico()
  const noAccessLog = await startPortico(root, { PORTICO_ACCESS_LOG: 'off' })
  const traced = await startPortico(root, { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${sink.match[1]}` })
  // The documented production set-up: one trace in a hundred sampled, the rest passing their trace id on.
  const tracedSampled = await startPortico(root, { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${sink.match[1]}`, OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.01' })
  const chainPortico = await startPortico()
  const [cacheMemory, cacheRedis] = [await startPortico(), await startPortico()]
  const twoWorkers = await startPortico(root, {}, ['--workers', '2'])
  // TLS: a self-signed pair for 127.0.0.1 (h2load does not check it), served by Portico as shipped and by nginx.
  let h2loadThere = true
  try {
    execFileSync('h2load', ['--version'], { stdio: 'ignore' })
  } catch {
    h2loadThere = false
    console.log('h2load not installed: skipping the TLS rows (scripts/bench.sh installs it when it can)')
  }
  const tlsDir = mkdtempSync(join(tmpdir(), 'portico-bench-tls-'))
  const [certFile, keyFile] = [join(tlsDir, 'bench.crt'), join(tlsDir, 'bench.key')]
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-keyout', keyFile, '-out', certFile], { stdio: 'ignore' })
  const tlsPortico = h2loadThere ? await startPortico(root, {}, ['--tls-cert', certFile, '--tls-key', keyFile]) : undefined
  // Auth's cost is read against the plain route of the same process: two identical processes differ by more than it.
  const authProcess = await startPortico()
  const targets: [name: string, url: string, pid: number | undefined, headers?: Record<string, string>, mode?: LoadMode][] = [
    ['direct', `${upstreamUrl}/api/items`, undefined],
    ['fastify+reply-from', `http://127.0.0.1:${replyFromOnly.match[1]}/api/items`, replyFromOnly.child.pid],
    ['fastify+undici.dispatch', `http://127.0.0.1:${engineFloor.match[1]}/api/items`, engineFloor.child.pid],
    // Targets compared with a ratio load one after the other (see `paired` below): portico between the minimal app and
    // fast-gateway, tracing's two rows on either side of the twin (tracing off, the same build as portico).
    ['fastify-http-proxy', `http://127.0.0.1:${minimal.match[1]}/api/items`, minimal.child.pid],
    ['portico', `http://127.0.0.1:${plainPortico.port}/api/items`, plainPortico.pid],
    ['fast-gateway', `http://127.0.0.1:${fastGateway.match[1]}/api/items`, fastGateway.child.pid],
    ['portico tracing 1 %', `http://127.0.0.1:${tracedSampled.port}/api/items`, tracedSampled.pid],
    ['portico (its twin)', `http://127.0.0.1:${twinPortico.port}/api/items`, twinPortico.pid],
    ['portico tracing on', `http://127.0.0.1:${traced.port}/api/items`, traced.pid],
    ['portico access log off', `http://127.0.0.1:${noAccessLog.port}/api/items`, noAccessLog.pid],
    ['portico+redis chain', `http://127.0.0.1:${chainPortico.port}/chain/items`, chainPortico.pid],
    ['portico cache hit memory', `http://127.0.0.1:${cacheMemory.port}/cached/items`, cacheMemory.pid],
    ['portico cache hit redis', `http://127.0.0.1:${cacheRedis.port}/shared/items`, cacheRedis.pid],
    ['portico 2 workers', `http://127.0.0.1:${twoWorkers.port}/api/items`, twoWorkers.pid],
    ['portico (auth process)', `http://127.0.0.1:${authProcess.port}/api/items`, authProcess.pid],
    ['portico api key', `http://127.0.0.1:${authProcess.port}/keyed/items`, authProcess.pid, { 'x-api-key': apiKey }],
    ['portico jwt (cached)', `http://127.0.0.1:${authProcess.port}/tokens/items`, authProcess.pid, { authorization: `Bearer ${token}` }],
    ['portico shaped route', `http://127.0.0.1:${authProcess.port}/api/items`, authProcess.pid, { host: 'api.bench' }],
  ]
  if (tlsPortico) {
    const url = `https://127.0.0.1:${tlsPortico.port}/api/items`
    targets.push(['portico https h1', url, tlsPortico.pid, undefined, 'tls-h1'], ['portico https h2', url, tlsPortico.pid, undefined, 'tls-h2'], ['portico https new conn', url, tlsPortico.pid, undefined, 'tls-new'])
  }
  const baselineDir = process.env.BENCH_BASELINE
  if (baselineDir) {
    const [basePlain, baseChain] = [await startPortico(baselineDir), await startPortico(baselineDir)]
    targets.push(['baseline portico', `http://127.0.0.1:${basePlain.port}/api/items`, basePlain.pid])
    targets.push(['baseline chain', `http://127.0.0.1:${baseChain.port}/chain/items`, baseChain.pid])
  }
  let nginx: string | undefined
  try {
    nginx = execFileSync('bash', ['-c', 'command -v nginx || ls /usr/sbin/nginx'], { encoding: 'utf8' }).trim().split('\n')[0]
  } catch {
    console.log('nginx not installed: skipping it (scripts/bench.sh installs it when it can)')
  }
  if (nginx) {
    for (const workers of [1, 2]) {
      const port = await freePort()
      const tls = workers === 1 && h2loadThere ? { port: await freePort(), cert: certFile, key: keyFile } : undefined
      const dir = nginxConfig(upstreamPort, port, workers, tls)
      const child = spawn(...placed(workers === 1 ? 'target' : 'all', nginx, ['-c', join(dir, 'nginx.conf'), '-p', dir]), { stdio: 'ignore' })
      children.push(child)
      await until(async () => (await fetch(`http://127.0.0.1:${port}/api/items`)).ok)
      if (workers === 1) {
        targets.push(['nginx', `http://127.0.0.1:${port}/api/items`, child.pid])
        targets.push(['nginx proxy_cache hit', `http://127.0.0.1:${port}/cached/items`, child.pid])
        if (tls) {
          const url = `https://127.0.0.1:${tls.port}/api/items`
          targets.push(['nginx https h1', url, child.pid, undefined, 'tls-h1'], ['nginx https h2', url, child.pid, undefined, 'tls-h2'], ['nginx https new conn', url, child.pid, undefined, 'tls-new'])
        }
      } else targets.push(['nginx 2 workers', `http://127.0.0.1:${port}/api/items`, child.pid])
    }
  }

  // BENCH_TARGETS=<a regular expression>: only the targets it matches are loaded (the rest still start), for the many
  // rounds a ratio between a few of them needs on a noisy machine.
  const only = process.env.BENCH_TARGETS ? new RegExp(process.env.BENCH_TARGETS) : undefined
  if (only) targets.splice(0, targets.length, ...targets.filter(([name]) => only.test(name)))

  // Two cores carry the load generator, the upstream and the proxy, and the machine's speed swings from second to
  // second: single runs move by ±20 %. Rounds interleave the targets so each sees the same conditions, and the median
  // round counts. CPU time per request is what a request costs the proxy's processes, whatever else the machine does.
  // Warm pools and JIT: a Node target's first 3 s under load cost up to twice what it settles at after 6 s.
  for (const [, url, pid, headers, mode] of targets) await (mode === undefined ? autocannon({ url, connections, duration: 5, headers }) : load(url, pid, headers, mode))
  // Every other round runs the targets in reverse: a target's place in the round biases it (seen: two identical
  // Portico processes 20-35 % apart when always run in the same order).
  const runs = new Map<string, Round[]>(targets.map(([name]) => [name, []]))
  const roundsOfRuns: Map<string, Round[]>[] = []
  for (let run = 0; run < runCount; run++) {
    const rounds = new Map<string, Round[]>(targets.map(([name]) => [name, []]))
    for (let round = 0; round < roundCount; round++) {
      for (const [name, url, pid, headers, mode] of round % 2 === 0 ? targets : [...targets].reverse()) rounds.get(name)?.push(await load(url, pid, headers, mode))
    }
    roundsOfRuns.push(rounds)
    for (const [name, list] of rounds) {
      const middle = (pick: (r: Round) => number) => median(list.map(pick))
      runs.get(name)?.push({ rps: middle((r) => r.rps), p50: middle((r) => r.p50), p99: middle((r) => r.p99), cpuUs: middle((r) => r.cpuUs), errors: list.reduce((n, r) => n + r.errors, 0) })
    }
  }
  const results = targets.map(([name]) => {
    const list = runs.get(name) ?? []
    const middle = (pick: (r: Round) => number) => median(list.map(pick))
    const cpus = list.map((r) => r.cpuUs)
    const cpuUs = middle((r) => r.cpuUs)
    return { name, rps: middle((r) => r.rps), p50: middle((r) => r.p50), p99: middle((r) => r.p99), cpuUs, cpuSpread: ((Math.max(...cpus) - Math.min(...cpus)) / cpuUs) * 100, errors: list.reduce((n, r) => n + r.errors, 0) }
  })
  const baseline = results.find((r) => r.name === 'fastify-http-proxy') ?? results[0]
  const plain = results.find((r) => r.name === 'portico') ?? results[0]
  const ratio = (a: number, b: number | undefined) => (Number.isFinite(a / (b ?? NaN)) ? (a / (b ?? NaN)).toFixed(2) : '-')
  console.log(`\n${connections} connections, ${runCount} runs of ${roundCount} interleaved rounds of ${seconds} s: each figure the median of the runs' medians; spread: how far the runs' CPU figures lie apart (${process.version})`)
  console.log('portico targets run as shipped (log level info, access log on stdout, metrics on, tracing off) but where named')
  console.log(placement ? `pinned: the load side (autocannon, h2load, the upstream, Redis, the OTLP sink) on CPU 0, each single-process target on CPU ${placement.target}, the two-worker targets on CPUs ${placement.all}` : 'not pinned (BENCH_PIN=1 pins): the load side and the targets share every CPU')
  console.log(`portico 2 workers: ${workersListening().why}`)
  console.log('target                   req/s     p50 ms  p99 ms  errors  cpu µs/req  spread  req/s vs fastify-http-proxy  vs portico  cpu vs portico')
  for (const r of results) {
    const cpu = Number.isFinite(r.cpuUs) ? r.cpuUs.toFixed(1) : '-'
    const spread = Number.isFinite(r.cpuSpread) ? `${r.cpuSpread.toFixed(0)} %` : '-'
    console.log(
      `${r.name.padEnd(24)} ${r.rps.toFixed(0).padStart(8)}  ${String(r.p50).padStart(6)}  ${String(r.p99).padStart(6)}  ${String(r.errors).padStart(6)}  ${cpu.padStart(10)}  ${spread.padStart(6)}  ${ratio(r.rps, baseline?.rps).padStart(26)}  ${ratio(r.rps, plain?.rps).padStart(10)}  ${ratio(r.cpuUs, plain?.cpuUs).padStart(14)}`,
    )
  }

  // The scale issue's targets, as measured in this run.
  const named = (name: string) => results.find((r) => r.name === name)
  const [fastGatewayResult, nginxResult, nginxTwo, porticoTwo, cacheHit] = ['fast-gateway', 'nginx', 'nginx 2 workers', 'portico 2 workers', 'portico cache hit memory'].map(named)
  console.log(`\nportico as shipped: ${ratio(plain?.rps ?? NaN, baseline?.rps)}× the minimal app's req/s (target ≥ 1.00), ${ratio(plain?.rps ?? NaN, fastGatewayResult?.rps)}× fast-gateway's (≥ 1.00), ${ratio(plain?.cpuUs ?? NaN, nginxResult?.cpuUs)}× nginx's CPU per request (≤ 4)`)
  // A ratio of two targets for each run: taken in each round between their two loads, one right after the other, and
  // the median of the run's rounds. The machine's speed moves by more than the margins claimed between loads further
  // apart; two adjacent loads see nearly the same machine.
  const paired = (name: string, against: string, pick: (r: Round) => number) =>
    roundsOfRuns.map((rounds) => {
      const theirs = rounds.get(against) ?? []
      return median((rounds.get(name) ?? []).map((r, i) => (theirs[i] ? pick(r) / pick(theirs[i]) : NaN)))
    })
  const listed = (ratios: number[]) => ratios.map((r) => ratio(r, 1)).join(', ')
  const byRps = (r: Round) => r.rps
  const byCpu = (r: Round) => r.cpuUs
  const perRun = (name: string, against: string) => (runs.get(name) ?? []).map((r, i) => ratio(r.rps, runs.get(against)?.[i]?.rps)).join(', ')
  console.log(`each run, its medians: portico ${perRun('portico', 'fastify-http-proxy')}× the minimal app's req/s, ${perRun('portico', 'fast-gateway')}× fast-gateway's`)
  console.log(`each run, paired within its rounds: portico ${listed(paired('portico', 'fastify-http-proxy', byRps))}× the minimal app's req/s (target ≥ 1.05 in each), ${listed(paired('portico', 'fast-gateway', byRps))}× fast-gateway's (≥ 1.0 in each)`)
  const [traceAll, traceSome] = ['portico tracing on', 'portico tracing 1 %'].map(named)
  const bare = named('fastify+reply-from')
  console.log(`@fastify/http-proxy's route wrapper over reply-from registered straight: +${((baseline?.cpuUs ?? NaN) - (bare?.cpuUs ?? NaN)).toFixed(1)} µs a request (${ratio(bare?.rps ?? NaN, baseline?.rps)}× the req/s without it)`)
  console.log(`tracing: every request sampled ${ratio(traceAll?.cpuUs ?? NaN, plain?.cpuUs)}× the CPU per request of tracing off (target ≤ 1.20), 1 % sampled ${ratio(traceSome?.cpuUs ?? NaN, plain?.cpuUs)}× (≤ 1.03)`)
  console.log(`tracing, each run paired within its rounds against the twin (tracing off): every request sampled ${listed(paired('portico tracing on', 'portico (its twin)', byCpu))}× its CPU per request, 1 % sampled ${listed(paired('portico tracing 1 %', 'portico (its twin)', byCpu))}×`)
  console.log(`1 → 2 workers: portico ${ratio(porticoTwo?.rps ?? NaN, plain?.rps)}× (CPU per request ${ratio(porticoTwo?.cpuUs ?? NaN, plain?.cpuUs)}× one worker's, target ≤ 1.1), nginx ${ratio(nginxTwo?.rps ?? NaN, nginxResult?.rps)}× (portico's gain at least 0.9 of nginx's: ${ratio((porticoTwo?.rps ?? NaN) / (plain?.rps ?? NaN), (nginxTwo?.rps ?? NaN) / (nginxResult?.rps ?? NaN))})`)
  console.log(`a memory cache hit: ${ratio(cacheHit?.rps ?? NaN, plain?.rps)}× a proxied request's req/s (target ≥ 1.5)`)
  const twin = named('portico (its twin)')
  const floor = Math.abs((twin?.cpuUs ?? NaN) / (plain?.cpuUs ?? NaN) - 1) * 100
  console.log(`noise floor: the twin of portico (the same build, another process) ${ratio(twin?.cpuUs ?? NaN, plain?.cpuUs)}× its CPU per request; a difference under ${floor.toFixed(0)} % is not shown by this run`)
  const over = (name: string) => ((named(name)?.cpuUs ?? NaN) - (named('portico (auth process)')?.cpuUs ?? NaN)).toFixed(1)
  console.log(`auth over the plain route of the same process: an API key +${over('portico api key')} µs a request (aim ≤ 15), a cached RS256 JWT +${over('portico jwt (cached)')} µs (aim ≤ 40)`)
  console.log(`traffic shaping over the plain route of the same process: host match, a 90/10 split and header transforms +${over('portico shaped route')} µs a request (aim ≤ 5)`)
  const tlsRatio = (kind: string) => `${ratio(named(`portico https ${kind}`)?.rps ?? NaN, named(`nginx https ${kind}`)?.rps)}× nginx's req/s, ${ratio(named(`portico https ${kind}`)?.cpuUs ?? NaN, named(`nginx https ${kind}`)?.cpuUs)}× its CPU per request`
  if (named('portico https h1')) console.log(`TLS (h2load; p50/p99 columns show its mean): HTTPS over HTTP/1.1 ${tlsRatio('h1')}; HTTP/2 ${tlsRatio('h2')}; a new connection per request ${tlsRatio('new conn')}; portico's TLS over its plain route: ${ratio(named('portico https h1')?.cpuUs ?? NaN, plain?.cpuUs)}× (h1), ${ratio(named('portico https h2')?.cpuUs ?? NaN, plain?.cpuUs)}× (h2)`)
  const basePlain = named('baseline portico')
  if (basePlain) console.log(`A/B: portico ${ratio(plain?.cpuUs ?? NaN, basePlain.cpuUs)}× the baseline's CPU per request on the plain route (twin: ${ratio(twin?.cpuUs ?? NaN, basePlain.cpuUs)}×)`)

  const small = matchCost(10)
  const large = matchCost(10_000)
  console.log(`\nroute matching: ${small.toFixed(0)} ns with 10 routes, ${large.toFixed(0)} ns with 10 000 routes (ratio ${(large / small).toFixed(2)})`)
} finally {
  for (const child of children) child.kill('SIGTERM') // nginx's master takes its workers down on TERM, not on KILL
}
