import type { Logger } from '../kernel/logger.js'
import type { Instance, ServiceInstances } from '../balancer/instance.js'
import type { ComponentHealth } from '../kernel/health.js'
import type { ConsulClient } from './consul-client.js'
import { runBlockingQuery } from './blocking-query.js'
import { toInstances } from './to-instances.js'

interface ServiceWatch {
  readonly abort: AbortController
  instances: readonly Instance[]
  /** True while the last query failed: the instances are the last known ones. */
  stale: boolean
  synced: boolean
  lastError: string | undefined
  updatedAt: Date | undefined
}

export interface ConsulDiscoveryOptions {
  readonly client: ConsulClient
  readonly logger: Logger
  /** How long Consul holds a blocking query open. */
  readonly waitSeconds?: number
}

/**
 * Keeps the passing instances of every service a route references, one blocking query loop per service.
 * Each answer replaces the service's instance list in one assignment. When Consul cannot be reached the last known
 * instances keep serving and the service is marked stale; the loop retries with jittered backoff and recovers by itself.
 */
export class ConsulDiscovery implements ServiceInstances {
  readonly #options: ConsulDiscoveryOptions
  readonly #watches = new Map<string, ServiceWatch>()

  constructor(options: ConsulDiscoveryOptions) {
    this.#options = options
  }

  instances(service: string): readonly Instance[] {
    return this.#watches.get(service)?.instances ?? []
  }

  follow(services: ReadonlySet<string>): void {
    for (const [service, watch] of this.#watches) {
      if (!services.has(service)) {
        watch.abort.abort()
        this.#watches.delete(service)
      }
    }
    for (const service of services) if (!this.#watches.has(service)) this.#watch(service)
  }

  stop(): void {
    this.follow(new Set())
  }

  health(): ComponentHealth {
    const services = Object.fromEntries(
      [...this.#watches].map(([name, w]) => [
        name,
        { instances: w.instances.length, stale: w.stale, synced: w.synced, updatedAt: w.updatedAt?.toISOString() ?? null, lastError: w.lastError ?? null },
      ]),
    )
    const stale = [...this.#watches].filter(([, w]) => w.stale).map(([name]) => name)
    return {
      status: stale.length > 0 ? 'degraded' : 'ok',
      consul: this.#options.client.address,
      ...(stale.length > 0 ? { detail: `Consul unreachable: serving last known instances of ${stale.join(', ')}` } : {}),
      services,
    }
  }

  #watch(service: string): void {
    const watch: ServiceWatch = { abort: new AbortController(), instances: [], stale: false, synced: false, lastError: undefined, updatedAt: undefined }
    this.#watches.set(service, watch)
    const { client, logger } = this.#options
    void runBlockingQuery({
      signal: watch.abort.signal,
      read: (index, signal) => client.healthyInstances(service, { index, waitSeconds: this.#options.waitSeconds ?? 30, signal }),
      onValue: (entries) => {
        watch.instances = Object.freeze(toInstances(entries))
        watch.updatedAt = new Date()
        if (watch.stale) logger.info({ service }, 'consul reachable again: instances are current')
        watch.stale = false
        watch.synced = true
        watch.lastError = undefined
      },
      onError: (error, failures) => {
        watch.stale = true
        watch.lastError = (error as Error).message
        if (failures === 1) logger.warn({ service, err: error }, 'consul query failed: serving last known instances')
      },
    })
  }
}
