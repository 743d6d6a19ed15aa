import type { Logger } from '../kernel/logger.js'
import type { Instance, ServiceInstances } from '../balancer/instance.js'
import type { ComponentHealth } from '../kernel/health.js'
import type { ConsulClient } from './consul-client.js'
import { runBlockingQuery } from './blocking-query.js'
import { toInstances } from './to-instances.js'

/**
 * How long the last known instances of a service stay after Consul, back from being unreachable, first says it has
 * none: an agent that lost its state (a dev agent, a lost data dir) answers empty until the services re-register.
 */
export const EMPTY_AFTER_OUTAGE_GRACE_MS = 15_000

interface ServiceWatch {
  readonly abort: AbortController
  instances: readonly Instance[]
  /** Set while the last known instances stand in for an empty answer that came right after an outage. */
  graceUntil: number | undefined
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
    const watch = this.#watches.get(service)
    if (!watch) return []
    if (watch.graceUntil !== undefined && Date.now() > watch.graceUntil) {
      watch.graceUntil = undefined
      watch.instances = []
    }
    return watch.instances
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
    const kept = [...this.#watches].filter(([, w]) => w.graceUntil !== undefined).map(([name]) => name)
    const details = [
      ...(stale.length > 0 ? [`Consul unreachable: serving last known instances of ${stale.join(', ')}`] : []),
      ...(kept.length > 0 ? [`Consul came back without instances of ${kept.join(', ')}: last known ones kept while they re-register`] : []),
    ]
    return {
      status: details.length > 0 ? 'degraded' : 'ok',
      consul: this.#options.client.address,
      ...(details.length > 0 ? { detail: details.join('; ') } : {}),
      services,
    }
  }

  #watch(service: string): void {
    const watch: ServiceWatch = { abort: new AbortController(), instances: [], graceUntil: undefined, stale: false, synced: false, lastError: undefined, updatedAt: undefined }
    this.#watches.set(service, watch)
    const { client, logger } = this.#options
    void runBlockingQuery({
      signal: watch.abort.signal,
      read: (index, signal) => client.healthyInstances(service, { index, waitSeconds: this.#options.waitSeconds ?? 30, signal }),
      onValue: (entries) => {
        const instances = toInstances(entries)
        if (instances.length === 0 && watch.stale && watch.instances.length > 0) {
          watch.graceUntil = Date.now() + EMPTY_AFTER_OUTAGE_GRACE_MS
          logger.warn({ service, keptMs: EMPTY_AFTER_OUTAGE_GRACE_MS }, 'consul is back with no instance of this service: keeping the last known ones while they re-register')
        } else if (instances.length > 0 || watch.graceUntil === undefined) {
          watch.graceUntil = undefined
          watch.instances = Object.freeze(instances)
        }
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
