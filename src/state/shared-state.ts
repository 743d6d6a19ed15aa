import { Cluster, Redis, type RedisOptions } from 'ioredis'
import { randomUUID } from 'node:crypto'
import { parseJsonObject } from '../kernel/json.js'
import type { Logger } from '../kernel/logger.js'
import type { ComponentHealth } from '../kernel/health.js'

/**
 * The Redis connection the replicas share state through, and what this replica knows about the others.
 * Commands never queue behind a dead Redis (no offline queue, a short command timeout): a policy asks, and on an
 * error falls back to its documented local behaviour at once.
 */
export interface SharedState {
  readonly replicaId: string
  readonly redis: Redis
  /** A second connection in subscriber mode, for breaker state broadcasts. */
  readonly subscriber: Redis
  /** Live replicas as last counted through Redis (1 until the first count, or while Redis is down). */
  liveReplicas(): number
  isUp(): boolean
  health(): ComponentHealth
  /** What this replica tells the fleet of itself with every heartbeat (version, uptime, route table, health). */
  describeSelfWith(describe: () => Record<string, unknown>): void
  /** The replicas heard from lately, as each described itself. */
  replicas(): Promise<Record<string, unknown>[]>
  /**
   * A value at `key` was not one Portico wrote (another client's, or damage): the caller has replaced it or treats it
   * as absent. Logged (at most once per 10 s) and shown by readiness as degraded for 10 s after the last one.
   */
  reportJunk(key: string, what: string): void
  /** Commands sent to Redis (the watchdog's pings included) and those that failed (error or timeout), since start. */
  commandCounts(): { readonly sent: number; readonly failed: number }
  close(): Promise<void>
}

const CLUSTER_REFUSAL = /^(MOVED|ASK|CLUSTERDOWN|CROSSSLOT|TRYAGAIN)\b/
// How long a Cluster refusal, or junk found in Redis, keeps readiness degraded after the last one.
const REFUSAL_MEMORY_MS = 10_000
// One hash tag for the fleet's own keys: the heartbeat's transaction and the fleet's MGET stay in one Cluster slot.
const REPLICAS_KEY = 'portico:{fleet}:replicas'
const REPLICA_KEY_PREFIX = 'portico:{fleet}:replica:'

export interface SharedStateOptions {
  readonly url: string
  readonly logger: Logger
  readonly commandTimeoutMs?: number
  /** How often a replica announces itself; a replica unheard for 3 intervals no longer counts. */
  readonly heartbeatMs?: number
  /** How often Redis is pinged; two pings unanswered within the command timeout drop the connection. */
  readonly watchdogMs?: number
}

type ConnectionOptions = Omit<RedisOptions, 'host' | 'port' | 'path' | 'sentinels'> & { retryStrategy: (attempt: number) => number }

/**
 * A client for REDIS_URL: `redis://` or `rediss://` (one server), `redis+cluster://[:password@]h1:6379,h2:6379` (a
 * Redis Cluster, through ioredis' Cluster: slots followed, MOVED and ASK redirects handled), or
 * `redis+sentinel://[:password@]s1:26379,s2:26379/mymaster` (the master Sentinel names, followed across failovers).
 * A Cluster is handed around as the same command interface as one server: every key of one route carries its
 * `{route}` hash tag, so a route's multi-key commands and scripts stay in one slot.
 */
export function connectRedis(url: string, connection: ConnectionOptions): Redis {
  const many = /^redis\+(cluster|sentinel):\/\/(?:([^@/]*)@)?([^/?#]+)(?:\/([^/?#]+))?\/?$/.exec(url)
  if (!many) return new Redis(url, connection)
  const [, kind, auth, hosts = '', name] = many
  const password = auth ? decodeURIComponent(auth.includes(':') ? auth.slice(auth.indexOf(':') + 1) : auth) || undefined : undefined
  const nodes = hosts.split(',').map((address) => {
    const at = address.lastIndexOf(':')
    return at === -1 ? { host: address, port: kind === 'cluster' ? 6379 : 26379 } : { host: address.slice(0, at), port: Number(address.slice(at + 1)) }
  })
  if (kind === 'sentinel') return new Redis({ ...connection, sentinels: nodes, name: name ?? 'mymaster', password, sentinelRetryStrategy: connection.retryStrategy })
  const { retryStrategy, enableOfflineQueue, ...perNode } = connection
  const cluster = new Cluster(nodes, { redisOptions: { ...perNode, password }, clusterRetryStrategy: retryStrategy, enableOfflineQueue, retryDelayOnFailover: 100, retryDelayOnClusterDown: 100, maxRedirections: 16 })
  // The same commands, sent to the node that owns each key's slot.
  return cluster as unknown as Redis
}

export function createSharedState(options: SharedStateOptions): SharedState {
  const { logger } = options
  const heartbeatMs = options.heartbeatMs ?? 2_000
  const connection = {
    enableOfflineQueue: false,
    commandTimeout: options.commandTimeoutMs ?? 200,
    maxRetriesPerRequest: 0,
    connectTimeout: 2_000,
    // Keep trying for ever, never more than once a second: Redis coming back must be noticed without a restart.
    retryStrategy: (attempt: number) => Math.min(1_000, 50 * 2 ** attempt),
    lazyConnect: false,
  }
  const redis = connectRedis(options.url, connection)
  const subscriber = connectRedis(options.url, { ...connection, commandTimeout: undefined })
  const replicaId = randomUUID()
  const counts = { sent: 0, failed: 0 }
  // A Cluster's refusals (a redirect a single-node client cannot follow, a cluster down, keys across slots) leave the
  // connection up while the commands fail: readiness and the metrics must say so, and the log why.
  let clusterRefusal: { message: string; at: number } | undefined
  let junk: { key: string; what: string; at: number; reported: number } | undefined
  let refusalLoggedAt = 0
  countCommands(redis, counts, (error) => {
    if (!CLUSTER_REFUSAL.test(error.message)) return
    clusterRefusal = { message: error.message, at: Date.now() }
    if (Date.now() - refusalLoggedAt < 60_000) return
    refusalLoggedAt = Date.now()
    logger.warn({ err: error.message }, error.message.startsWith('MOVED') || error.message.startsWith('ASK') ? 'REDIS_URL names one node of a Redis Cluster: use redis+cluster://host:port,… (limits and breakers fall back to local state meanwhile)' : 'the Redis Cluster refuses commands: limits and breakers fall back to local state')
  })
  let replicas = 1
  let describeSelf: () => Record<string, unknown> = () => ({})
  let lastError: string | undefined
  let down = false

  for (const client of [redis, subscriber]) {
    client.on('error', (error: Error) => {
      lastError = error.message
    })
  }
  redis.on('ready', () => {
    if (down) logger.info('redis is back: shared rate limits and breakers resume')
    down = false
    void heartbeat()
  })
  redis.on('close', () => {
    if (!down) logger.warn({ err: lastError }, 'redis connection lost: rate limits and breakers fall back to local state')
    down = true
  })

  async function heartbeat(): Promise<void> {
    if (redis.status !== 'ready') return
    const now = Date.now()
    try {
      const results = await redis
        .multi()
        .zadd(REPLICAS_KEY, now, replicaId)
        .zremrangebyscore(REPLICAS_KEY, '-inf', now - 3 * heartbeatMs)
        .zcard(REPLICAS_KEY)
        .pexpire(REPLICAS_KEY, 10 * heartbeatMs)
        .set(`${REPLICA_KEY_PREFIX}${replicaId}`, JSON.stringify({ ...describeSelf(), id: replicaId, seenAt: now }), 'PX', 3 * heartbeatMs)
        .exec()
      const count = Number(results?.[2]?.[1] ?? 1)
      if (count >= 1) replicas = count
    } catch (error) {
      lastError = (error as Error).message
    }
  }
  const timer = setInterval(() => void heartbeat(), heartbeatMs)
  timer.unref()

  // A Redis that hangs (a long fork, a swap storm, a network black hole) keeps the connection open and answers
  // nothing: every command would wait out its timeout, and Redis would run them all when it wakes, long after the
  // gateway gave up on them. So a watchdog pings it; after two pings without an answer the connection is dropped, with
  // its queue: the policies go to their documented local behaviour at once, and reconnecting probes Redis until it
  // answers again.
  // A Cluster is left to its own failure handling (slots move to a promoted replica; a ping would go to any node).
  let missedPings = 0
  const watchdog = setInterval(() => {
    if (redis.status !== 'ready' || redis instanceof Cluster) return
    redis.ping().then(
      () => {
        missedPings = 0
      },
      (error: Error) => {
        if (redis.status !== 'ready' || ++missedPings < 2) return
        missedPings = 0
        lastError = `Redis not answering (${error.message})`
        logger.warn({ err: error.message }, 'redis is not answering: dropping the connection; rate limits and breakers fall back to local state')
        redis.disconnect(true)
      },
    )
  }, options.watchdogMs ?? 250)
  watchdog.unref()

  return {
    replicaId,
    redis,
    subscriber,
    liveReplicas: () => replicas,
    // A Cluster that refused lately counts as down: the hot path goes local at once, and tries again after a while.
    isUp: () => redis.status === 'ready' && !(clusterRefusal && Date.now() - clusterRefusal.at < REFUSAL_MEMORY_MS),
    commandCounts: () => counts,
    reportJunk(key, what) {
      const at = Date.now()
      const reported = junk && at - junk.reported < REFUSAL_MEMORY_MS ? junk.reported : at
      if (reported === at) logger.warn({ key }, `junk in Redis: ${what}`)
      junk = { key, what, at, reported }
    },
    describeSelfWith(describe) {
      describeSelf = describe
      void heartbeat()
    },
    async replicas() {
      const ids = await redis.zrange(REPLICAS_KEY, '0', '-1')
      if (ids.length === 0) return []
      const described = await redis.mget(ids.map((id) => `${REPLICA_KEY_PREFIX}${id}`))
      return described.map((text, i) => (text === null ? undefined : parseJsonObject(text)) ?? { id: ids[i] })
    },
    health: () => {
      if (redis.status !== 'ready') return { status: 'degraded', detail: `Redis unreachable (${lastError ?? redis.status}): limits and breakers are local`, replicas }
      if (clusterRefusal && Date.now() - clusterRefusal.at < REFUSAL_MEMORY_MS) return { status: 'degraded', detail: `Redis refuses commands (${clusterRefusal.message}): limits and breakers are local`, replicas }
      if (junk && Date.now() - junk.at < REFUSAL_MEMORY_MS) return { status: 'degraded', detail: `junk in Redis at ${junk.key}: ${junk.what}`, replicas }
      return { status: 'ok', replicas }
    },
    async close() {
      clearInterval(timer)
      clearInterval(watchdog)
      await redis.zrem(REPLICAS_KEY, replicaId).catch(() => undefined)
      redis.disconnect()
      subscriber.disconnect()
    },
  }
}

/**
 * Counts every command through the one method they all pass (pipelines and MULTI included): ioredis has no event per
 * command. A failed one is counted when its promise settles.
 */
function countCommands(redis: Redis, counts: { sent: number; failed: number }, onError: (error: Error) => void): void {
  const send = redis.sendCommand.bind(redis)
  const onFailure = (error: Error): void => {
    counts.failed++
    onError(error)
  }
  // Every argument passes on: a Cluster's sendCommand takes a third (the node a redirected command goes to).
  redis.sendCommand = ((command: Parameters<typeof redis.sendCommand>[0], ...rest: unknown[]) => {
    counts.sent++
    command.promise.then(undefined, onFailure)
    return (send as (...args: unknown[]) => unknown)(command, ...rest)
  }) as typeof redis.sendCommand
}
