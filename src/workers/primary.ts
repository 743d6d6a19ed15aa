import cluster, { type Worker } from 'node:cluster'
import { readFileSync } from 'node:fs'
import { access } from 'node:fs/promises'
import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http'
import { availableParallelism } from 'node:os'
import type { Logger } from 'pino'
import { AggregatorRegistry, type PrometheusContentType } from 'prom-client'
import type { RouteDefinition } from '../config/parse-route-file.js'
import { routeProviders } from '../config/providers/route-providers.js'
import { RouteWatcher } from '../config/route-watcher.js'
import { createConsulClient } from '../discovery/consul-client.js'
import { ConsulDiscovery } from '../discovery/consul-discovery.js'
import { GatewayError, PROBLEM_CONTENT_TYPE, toProblem } from '../kernel/errors.js'
import { isHostMessage } from '../kernel/host-channel.js'
import { ConfigError, type PorticoConfig } from '../kernel/process-config.js'
import { POLICIES } from '../policies/index.js'
import { assertPortFree, WORKER_PORT_VARIABLE, workersListening } from './listening.js'
import { parseWorkerMessage, RETIRE, type DiscoveryMessage, type TableMessage } from './messages.js'

// How often the primary looks for a change in what its Consul watches know, to pass it on.
const DISCOVERY_PUSH_MS = 200

/** The workers one host runs for `--workers`: a count, or `auto`: the CPUs this process may use, a container's quota included. */
export function workerCount(setting: number | 'auto'): number {
  if (setting !== 'auto') return setting
  return Math.max(1, Math.min(availableParallelism(), cgroupCpus() ?? Number.POSITIVE_INFINITY))
}

/** The CPU quota of this process's cgroup (v2, then v1), rounded up; undefined when there is none. */
function cgroupCpus(): number | undefined {
  const read = (path: string) => {
    try {
      return readFileSync(path, 'utf8').trim()
    } catch {
      return undefined
    }
  }
  const [quota, period] = read('/sys/fs/cgroup/cpu.max')?.split(/\s+/) ?? [read('/sys/fs/cgroup/cpu/cpu.cfs_quota_us'), read('/sys/fs/cgroup/cpu/cpu.cfs_period_us')]
  const cpus = Number(quota) / Number(period)
  return Number.isFinite(cpus) && cpus > 0 ? Math.ceil(cpus) : undefined
}

/**
 * The primary of `--workers N`: it forks the workers (each a whole gateway on the shared traffic port: each listening
 * on it itself where that loses nothing, see `workersListening`, else node:cluster handing out connections), replaces one that dies, replaces them one by one on SIGUSR2 (a new one serves before an
 * old one stops), passes SIGHUP and SIGUSR1 on, and on SIGTERM/SIGINT lets every worker drain, then exits. It holds the
 * host-wide state its policies ask for (the rate limit's counts without Redis), and answers on the admin port:
 * /metrics aggregated over the workers, actions sent to every worker, everything else to one.
 */
export async function runPrimary(config: PorticoConfig, logger: Logger): Promise<number> {
  const count = workerCount(config.workers)
  // Route definitions hold Sets and Maps: structured clone carries them, JSON would not.
  cluster.setupPrimary({ serialization: 'advanced' })
  for (const kind of POLICIES) kind.holdForHost?.()
  const tables = await decideTables(config, logger)
  const discovery = relayDiscovery(config, logger)
  const metrics = new AggregatorRegistry<PrometheusContentType>()
  const admins = new Map<number, string>()
  const retiring = new Set<number>()
  let stopping = false
  let trafficUrl = ''
  const listening = workersListening()
  // Workers that listen themselves bind the one port: the one asked for, or for port 0 the one the first worker got.
  let trafficPort = config.port
  if (listening.themselves) await assertPortFree(config.host, config.port)

  const fork = (): Promise<Worker> =>
    new Promise((resolve, reject) => {
      const worker = cluster.fork(listening.themselves ? { [WORKER_PORT_VARIABLE]: String(trafficPort) } : undefined)
      const onMessage = (message: unknown) => {
        const ready = parseWorkerMessage(message)
        if (ready?.portico !== 'ready') return
        admins.set(worker.id, ready.adminUrl)
        trafficUrl = ready.url
        trafficPort = Number(new URL(ready.url).port)
        worker.off('message', onMessage)
        worker.off('exit', onEarlyExit)
        resolve(worker)
      }
      const onEarlyExit = (code: number | null) => reject(new Error(`worker ${worker.id} exited (${code}) before it served`))
      worker.on('message', onMessage)
      worker.once('exit', onEarlyExit)
    })

  // What one worker tells the host (a breaker opened without Redis) reaches the others.
  cluster.on('message', (from, message) => {
    if (!isHostMessage(message)) return
    for (const worker of Object.values(cluster.workers ?? {})) if (worker && worker !== from && worker.isConnected()) worker.send(message)
  })

  const started = new Map<number, number>()
  cluster.on('fork', (worker) => {
    started.set(worker.id, Date.now())
    // A send to a worker that has just died fails (EPIPE) before its exit is seen: unheard, it would end the primary
    // and every worker with it. Its exit is handled below; the message was for a process that is gone.
    worker.on('error', (error: Error) => logger.warn({ worker: worker.id, pid: worker.process.pid, err: error }, 'a message to a worker was lost'))
  })
  cluster.on('exit', (worker, code, signal) => {
    admins.delete(worker.id)
    const lived = Date.now() - (started.get(worker.id) ?? 0)
    started.delete(worker.id)
    if (stopping || retiring.delete(worker.id)) return
    logger.error({ worker: worker.id, pid: worker.process.pid, code, signal }, 'worker died; starting another')
    // One that dies at once (a crash at start) is not restarted in a tight loop.
    setTimeout(() => void fork().catch((error: unknown) => logger.error({ err: error }, 'replacing a worker failed')), lived < 5_000 ? 1_000 : 0)
  })

  const retire = (worker: Worker): Promise<void> =>
    new Promise((resolve) => {
      retiring.add(worker.id)
      worker.once('exit', () => resolve())
      // A worker that does not finish within the drain timeout is stopped.
      const kill = setTimeout(() => worker.process.kill('SIGKILL'), config.drainTimeoutMs + 5_000)
      worker.once('exit', () => clearTimeout(kill))
      worker.send(RETIRE)
    })

  let rolling: Promise<void> | undefined
  const roll = async () => {
    const old = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined)
    logger.info({ workers: old.length }, 'SIGUSR2: replacing the workers one by one')
    for (const worker of old) {
      await fork()
      await retire(worker)
    }
    logger.info('SIGUSR2: every worker replaced')
  }

  try {
    if (listening.themselves && trafficPort === 0) await fork()
    await Promise.all(Array.from({ length: count - admins.size }, fork))
  } catch (error) {
    stopping = true
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGTERM')
    throw error
  }
  const admin = createServer((req, res) => void answerAdmin(req, res, metrics, [...admins.values()]))
  const adminUrl = await new Promise<string>((resolve, reject) => {
    admin.once('error', reject)
    admin.listen(config.adminPort, config.adminHost, () => {
      const address = admin.address() as { port: number }
      resolve(`http://${config.adminHost.includes(':') ? `[${config.adminHost}]` : config.adminHost}:${address.port}`)
    })
  })
  logger.info({ url: trafficUrl, adminUrl, workers: count, listening: listening.why, routesDir: config.routesDir }, 'portico is serving')

  return new Promise<number>((resolve) => {
    const forward = (signal: NodeJS.Signals) => () => {
      for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill(signal)
    }
    process.on('SIGHUP', () => {
      logger.info('SIGHUP: reloading routes')
      void tables.reload().catch((error: unknown) => logger.error({ err: error }, 'reload failed'))
    })
    process.on('SIGUSR1', forward('SIGUSR1'))
    process.on('SIGUSR2', () => {
      rolling ??= roll()
        .catch((error: unknown) => logger.error({ err: error }, 'SIGUSR2: replacing the workers failed'))
        .finally(() => (rolling = undefined))
    })
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) return
      stopping = true
      logger.info({ signal }, 'stopping: every worker drains')
      const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined)
      Promise.all(workers.map((w) => new Promise((done) => (w.isDead() ? done(undefined) : (w.once('exit', done), w.process.kill('SIGTERM'))))))
        .then(() => new Promise((done) => admin.close(done)))
        .then(() => {
          discovery.stop()
          tables.stop()
        })
        .then(() => resolve(0), () => resolve(1))
    }
    process.once('SIGTERM', () => stop('SIGTERM'))
    process.once('SIGINT', () => stop('SIGINT'))
  })
}

/**
 * The host's route table, decided in the primary: it alone watches the route files (and services' routes in Consul),
 * validates them and logs a refused one, once; every worker gets each table, and a new worker the current one.
 */
async function decideTables(config: PorticoConfig, logger: Logger): Promise<RouteWatcher<RouteDefinition>> {
  await access(config.routesDir).catch(() => {
    throw new ConfigError(`routes directory ${config.routesDir} does not exist (set --routes or PORTICO_ROUTES)`)
  })
  const message = (): TableMessage => {
    const live = watcher.current()
    return { portico: 'table', table: { routes: live.table.routes, consumers: live.consumers, sources: live.sources, version: live.version } }
  }
  const watcher: RouteWatcher<RouteDefinition> = new RouteWatcher<RouteDefinition>({
    providers: routeProviders(config.routesDir, config.consulRoutes, createConsulClient(config.consul), logger),
    // The primary decides tables and serves none: nothing to make live.
    compile: (routes) => ({ routes, commit: () => undefined }),
    logger,
    onSwap: () => {
      const table = message()
      for (const worker of Object.values(cluster.workers ?? {})) if (worker?.isConnected()) worker.send(table)
    },
  })
  cluster.on('message', (worker, value) => {
    if (parseWorkerMessage(value)?.portico === 'table?') worker.send(message())
  })
  await watcher.start()
  return watcher
}

/**
 * The host's Consul watches, in the primary: one blocking query per service that any worker's route table names; what
 * they know goes to every worker when it changes.
 */
function relayDiscovery(config: PorticoConfig, logger: Logger): { stop(): void } {
  const discovery = new ConsulDiscovery({ client: createConsulClient(config.consul), logger: logger.child({ component: 'discovery' }) })
  const followed = new Map<number, ReadonlySet<string>>()
  const followUnion = () => discovery.follow(new Set([...followed.values()].flatMap((services) => [...services])))
  let sent = ''
  const snapshot = (): DiscoveryMessage => {
    const services = new Set([...followed.values()].flatMap((s) => [...s]))
    return { portico: 'discovery', instances: Object.fromEntries([...services].map((s) => [s, discovery.instances(s)])), health: discovery.health() }
  }
  const broadcast = (message: DiscoveryMessage) => {
    for (const worker of Object.values(cluster.workers ?? {})) if (worker?.isConnected()) worker.send(message)
  }
  cluster.on('message', (worker, value) => {
    const message = parseWorkerMessage(value)
    if (message?.portico !== 'follow') return
    followed.set(worker.id, new Set(message.services))
    followUnion()
    // The new follower hears what is known at once; the others at the next change.
    const now = snapshot()
    sent = JSON.stringify(now)
    broadcast(now)
  })
  cluster.on('exit', (worker) => {
    if (followed.delete(worker.id)) followUnion()
  })
  const pusher = setInterval(() => {
    const now = snapshot()
    const text = JSON.stringify(now)
    if (text === sent) return
    sent = text
    broadcast(now)
  }, DISCOVERY_PUSH_MS)
  return {
    stop() {
      clearInterval(pusher)
      discovery.stop()
    },
  }
}

/** The primary's admin port: /metrics of every worker at once; an action reaches every worker; a read, one of them. */
async function answerAdmin(req: IncomingMessage, res: ServerResponse, metrics: AggregatorRegistry<PrometheusContentType>, workers: string[]): Promise<void> {
  try {
    if (req.method === 'GET' && req.url?.split('?')[0] === '/metrics') {
      // prom-client answers for the workers; the admin token is checked by the first worker (its answer is dropped).
      const check = await relay(req, workers[0], undefined)
      if (check.status !== 200) return void res.writeHead(check.status, check.headers).end(check.body)
      const text = await metrics.clusterMetrics()
      return void res.writeHead(200, { 'content-type': metrics.contentType }).end(text)
    }
    if (workers.length === 0) return answerProblem(res, new GatewayError('shutting_down', 'No worker of this host serves now'))
    if (req.method === 'GET' || req.method === 'HEAD') return stream(req, res, workers[0] as string)
    const body = await readBody(req)
    const answers = await Promise.all(workers.map((target) => relay(req, target, body)))
    const first = answers[0] as Relayed
    res.writeHead(first.status, first.headers).end(first.body)
  } catch (error) {
    answerProblem(res, new GatewayError('worker_unreachable', `A worker of this host did not answer (${(error as Error).message})`))
  }
}

/** How long the primary waits for a worker's answer (an action's whole answer; a read's headers). */
const RELAY_TIMEOUT_MS = 5_000

function answerProblem(res: ServerResponse, error: GatewayError): void {
  if (res.headersSent) return void res.destroy()
  res.writeHead(error.status, { ...error.headers, 'content-type': PROBLEM_CONTENT_TYPE, 'cache-control': 'no-store' }).end(JSON.stringify(toProblem(error)))
}

interface Relayed {
  readonly status: number
  readonly headers: Record<string, string | string[] | undefined>
  readonly body: Buffer
}

/** A read goes to one worker and streams back as it comes (the status page's events never end). */
function stream(req: IncomingMessage, res: ServerResponse, target: string): void {
  const upstream = request(`${target}${req.url ?? '/'}`, { method: req.method, headers: req.headers }, (answer) => {
    clearTimeout(timer)
    res.writeHead(answer.statusCode ?? 502, answer.headers)
    // The worker may die mid-stream: an unheard 'error' here would take the primary with it.
    answer.on('error', () => res.destroy())
    answer.pipe(res)
  })
  // A worker that hangs (stopped, stuck in a loop) must not hold the operator's request for ever.
  const timer = setTimeout(() => upstream.destroy(new Error(`no answer within ${RELAY_TIMEOUT_MS} ms`)), RELAY_TIMEOUT_MS)
  upstream.on('error', (error) => {
    clearTimeout(timer)
    answerProblem(res, new GatewayError('worker_unreachable', `A worker of this host did not answer (${error.message})`))
  })
  res.on('close', () => {
    clearTimeout(timer)
    upstream.destroy()
  })
  upstream.end()
}

function relay(req: IncomingMessage, target: string | undefined, body: Buffer | undefined): Promise<Relayed> {
  if (target === undefined) return Promise.reject(new Error('no worker serves'))
  return new Promise((resolve, reject) => {
    const upstream = request(`${target}${req.url ?? '/'}`, { method: req.method, headers: req.headers }, (answer) => {
      const chunks: Buffer[] = []
      answer.on('data', (chunk: Buffer) => chunks.push(chunk))
      answer.on('end', () => resolve({ status: answer.statusCode ?? 502, headers: answer.headers, body: Buffer.concat(chunks) }))
      answer.on('error', reject)
    })
    // The whole answer within the bound: an action's answer is small, and a hung worker must not hold it for ever.
    const timer = setTimeout(() => upstream.destroy(new Error(`no answer within ${RELAY_TIMEOUT_MS} ms`)), RELAY_TIMEOUT_MS)
    upstream.on('close', () => clearTimeout(timer))
    upstream.on('error', reject)
    upstream.end(body)
  })
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    req.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size > 1024 * 1024) return req.destroy(new Error('admin request body over 1 MiB'))
      chunks.push(chunk)
    })
    req.on('end', () => resolve(Buffer.concat(chunks)))
    req.on('error', reject)
  })
}
