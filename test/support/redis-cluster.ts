import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { Redis } from 'ioredis'
import { freePort } from './ports.js'
import { waitFor } from './poll.js'
import { kill } from './process.js'

const run = promisify(execFile)
const REDIS_SERVER = process.env.REDIS_SERVER_BIN ?? 'redis-server'

export interface TestRedisCluster {
  /** `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,…`, as REDIS_URL takes it. */
  readonly url: string
  readonly ports: readonly number[]
  /** The master port serving `key`'s slot now. */
  masterOf(key: string): Promise<number>
  /** Kills the master on `port`; its replica takes over (the cluster's own failover). */
  killMaster(port: number): Promise<void>
  stop(): Promise<void>
}

async function startServer(port: number, dir: string, args: string[]): Promise<ChildProcess> {
  const child = spawn(REDIS_SERVER, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...args], { stdio: 'ignore' })
  await waitFor(async () => {
    const probe = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null }).on('error', () => undefined)
    try {
      await probe.connect()
      return (await probe.ping()) === 'PONG'
    } catch {
      return false
    } finally {
      probe.disconnect()
    }
  }, { timeoutMs: 10_000, what: `redis-server on ${port}` })
  return child
}

/** A real Redis Cluster of 3 masters, each with one replica, on free ports (redis-cli --cluster create). */
export async function startRedisCluster(): Promise<TestRedisCluster> {
  const dir = await mkdtemp(join(tmpdir(), 'portico-cluster-'))
  const ports: number[] = []
  while (ports.length < 6) {
    const port = await freePort()
    if (!ports.includes(port)) ports.push(port)
  }
  const children = new Map<number, ChildProcess>()
  await Promise.all(
    ports.map(async (port) => {
      // a replica may take over however long it was apart from its master, and syncs at once (no diskless delay)
      children.set(port, await startServer(port, dir, ['--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`, '--cluster-node-timeout', '1000', '--cluster-replica-validity-factor', '0', '--repl-diskless-sync-delay', '0']))
    }),
  )
  await run('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '1', '--cluster-yes'])
  const admin = new Redis({ port: ports[0], host: '127.0.0.1' })
  await waitFor(async () => (await admin.cluster('INFO')).includes('cluster_state:ok'), { timeoutMs: 15_000, what: 'the cluster to be ok' })
  admin.disconnect()
  // every replica has its master's data before anything is killed
  await waitFor(
    async () => {
      const links = await Promise.all(
        ports.map(async (port) => {
          const client = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 0, retryStrategy: () => null }).on('error', () => undefined)
          try {
            const info = await client.info('replication')
            return info.includes('role:master') || info.includes('master_link_status:up')
          } finally {
            client.disconnect()
          }
        }),
      )
      return links.every(Boolean)
    },
    { timeoutMs: 15_000, what: 'every replica to be in sync' },
  )
  const masterOf = async (key: string): Promise<number> => {
    for (const port of ports) {
      if (!children.get(port) || children.get(port)?.exitCode !== null) continue
      const client = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 0, retryStrategy: () => null }).on('error', () => undefined)
      try {
        const slot = await client.cluster('KEYSLOT', key)
        const slots = await client.cluster('SLOTS')
        const owner = slots.find(([from, to]) => slot >= from && slot <= to)
        if (owner?.[2]) return owner[2][1]
      } catch {
        // that node is down: ask another
      } finally {
        client.disconnect()
      }
    }
    throw new Error(`no live node knows the master of ${key}`)
  }
  return {
    url: `redis+cluster://${ports.slice(0, 3).map((p) => `127.0.0.1:${p}`).join(',')}`,
    ports,
    masterOf,
    async killMaster(port) {
      await kill(children.get(port))
    },
    async stop() {
      await Promise.all([...children.values()].map((child) => kill(child)))
      await rm(dir, { recursive: true, force: true })
    },
  }
}

export interface TestRedisSentinel {
  /** `redis+sentinel://127.0.0.1:s1,…/mymaster`, as REDIS_URL takes it. */
  readonly url: string
  readonly masterPort: number
  /** Kills the master; the sentinels promote the replica. */
  killMaster(): Promise<void>
  /** The port of the master the sentinels name now. */
  currentMaster(): Promise<number>
  stop(): Promise<void>
}

/** A real Sentinel set-up: a master, a replica, and three sentinels (quorum 2), on free ports. */
export async function startRedisSentinel(name = 'mymaster'): Promise<TestRedisSentinel> {
  const dir = await mkdtemp(join(tmpdir(), 'portico-sentinel-'))
  const all: number[] = []
  while (all.length < 5) {
    const port = await freePort()
    if (!all.includes(port)) all.push(port)
  }
  const [masterPort, replicaPort, ...sentinelPorts] = all as [number, number, number, number, number]
  const master = await startServer(masterPort, dir, [])
  const replica = await startServer(replicaPort, dir, ['--replicaof', '127.0.0.1', String(masterPort)])
  const sentinels: ChildProcess[] = []
  for (const port of sentinelPorts) {
    const config = join(dir, `sentinel-${port}.conf`)
    const { writeFile } = await import('node:fs/promises')
    await writeFile(config, `port ${port}\nbind 127.0.0.1\nsentinel monitor ${name} 127.0.0.1 ${masterPort} 2\nsentinel down-after-milliseconds ${name} 1000\nsentinel failover-timeout ${name} 5000\n`)
    sentinels.push(spawn(REDIS_SERVER, [config, '--sentinel'], { stdio: 'ignore' }))
  }
  const currentMaster = async (): Promise<number> => {
    for (const port of sentinelPorts) {
      const client = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 0, retryStrategy: () => null }).on('error', () => undefined)
      try {
        const [, masterAt] = (await client.call('SENTINEL', 'get-master-addr-by-name', name)) as [string, string]
        return Number(masterAt)
      } catch {
        // ask the next sentinel
      } finally {
        client.disconnect()
      }
    }
    throw new Error('no sentinel answers')
  }
  await waitFor(async () => (await currentMaster().catch(() => 0)) === masterPort, { timeoutMs: 15_000, what: 'the sentinels to know the master' })
  return {
    url: `redis+sentinel://${sentinelPorts.map((p) => `127.0.0.1:${p}`).join(',')}/${name}`,
    masterPort,
    currentMaster,
    killMaster: () => kill(master),
    async stop() {
      await Promise.all([master, replica, ...sentinels].map((child) => kill(child)))
      await rm(dir, { recursive: true, force: true })
    },
  }
}
