import cluster from 'node:cluster'
import { AggregatorRegistry, type Registry } from 'prom-client'
import type { Instance, ServiceInstances } from '../balancer/instance.js'
import type { DecidedTables } from '../config/route-watcher.js'
import type { ComponentHealth } from '../kernel/health.js'
import { parsePrimaryMessage, TABLE_PLEASE, type FollowMessage, type ReadyMessage } from './messages.js'

/** This process's worker number under `--workers`; undefined in a process that serves alone (or the primary). */
export function workerId(): number | undefined {
  return cluster.worker?.id
}

/**
 * In a worker: the tables its primary decides (it alone reads the route files and reports a refused one). Resolves
 * once the first one is live.
 */
export const tablesFromPrimary: DecidedTables = (apply, signal) =>
  new Promise((resolve) => {
    const onMessage = (value: unknown) => {
      const message = parsePrimaryMessage(value)
      if (message?.portico !== 'table') return
      apply(message.table)
      resolve()
    }
    process.on('message', onMessage)
    signal.addEventListener('abort', () => process.off('message', onMessage), { once: true })
    process.send?.(TABLE_PLEASE)
  })

/**
 * A worker's view of Consul: the primary holds one blocking query per service for the host and passes on what it
 * learns; the worker only says which services its route table names.
 */
export class RelayedDiscovery implements ServiceInstances {
  #instances: Readonly<Record<string, readonly Instance[]>> = {}
  #health: ComponentHealth = { status: 'ok', detail: 'instances come from the primary process' }
  readonly #onMessage = (value: unknown) => {
    const message = parsePrimaryMessage(value)
    if (message?.portico !== 'discovery') return
    this.#instances = message.instances
    this.#health = message.health
  }

  constructor() {
    process.on('message', this.#onMessage)
  }

  instances(service: string): readonly Instance[] {
    return this.#instances[service] ?? []
  }

  follow(services: ReadonlySet<string>): void {
    process.send?.({ portico: 'follow', services: [...services] } satisfies FollowMessage)
  }

  health(): ComponentHealth {
    return this.#health
  }

  stop(): void {
    process.off('message', this.#onMessage)
  }
}

/**
 * In a worker: the primary may read `registry` for its aggregated /metrics, and hears when this worker serves.
 * `retire` runs when the primary asks this worker to hand over; `orphaned` when the primary died without asking.
 */
export function joinPrimary(registry: Registry, ready: Omit<ReadyMessage, 'portico'>, retire: () => void, orphaned: () => void): void {
  AggregatorRegistry.setRegistries([registry])
  new AggregatorRegistry() // its constructor installs the worker's side of prom-client's cluster protocol
  process.on('message', (message: unknown) => {
    if (parsePrimaryMessage(message)?.portico === 'retire') retire()
  })
  // A primary that dies unasked (SIGKILL, the OOM killer) closes the IPC channel, and node's cluster then ends the
  // worker at once, resetting every request it holds. The connections it was handed are its own, so it finishes them
  // instead: node skips its exit for a disconnect it takes for a planned one. A send to the gone primary (a shared
  // count, a breaker message) fails as an 'error' on the process, which must not end it either.
  const worker = cluster.worker
  worker?.once('disconnect', () => {
    if (worker.exitedAfterDisconnect) return
    worker.exitedAfterDisconnect = true
    process.on('error', () => undefined)
    orphaned()
  })
  process.send?.({ portico: 'ready', ...ready } satisfies ReadyMessage)
}

