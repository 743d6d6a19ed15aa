import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import type { ServiceInstances } from '../balancer/instance.js'
import type { ConsulClient } from '../discovery/consul-client.js'
import { routeProviders } from '../config/providers/route-providers.js'
import type { RouteProvider } from '../config/providers/provider.js'
import type { DecidedTables } from '../config/route-watcher.js'
import { ConsulDiscovery } from '../discovery/consul-discovery.js'
import type { ComponentHealth } from '../kernel/health.js'
import type { PorticoConfig } from '../kernel/process-config.js'
import { WORKER_PORT_VARIABLE } from './listening.js'
import { joinPrimary, RelayedDiscovery, tablesFromPrimary, workerId } from './worker.js'

/**
 * How this process serves: alone (it reads the route files, follows Consul and holds the admin port itself), or as a
 * worker of `--workers` (its primary does those for the host). The one place the server asks which.
 */
export interface ServingMode {
  /** The worker's number, on every log line and access log line; undefined in a process that serves alone. */
  readonly worker: number | undefined
  readonly discovery: ServiceInstances & { health(): ComponentHealth; stop(): void }
  readonly providers: RouteProvider[]
  readonly decidedTables: DecidedTables | undefined
  /** Where the traffic port listens: a worker may bind it itself beside the other workers (SO_REUSEPORT). */
  readonly trafficAddress: { readonly host: string; readonly port: number; readonly reusePort?: boolean; readonly exclusive?: boolean }
  /** The admin port, or a loopback port that only the primary talks to. */
  readonly adminAddress: { readonly host: string; readonly port: number; readonly exclusive?: boolean }
  readonly servingMessage: string
  /** It serves: a worker tells its primary, and hands over when the primary asks or is gone. */
  serving(registry: Registry, urls: { url: string; adminUrl: string }, handOver: () => void): void
}

export function servingMode(config: PorticoConfig, consul: ConsulClient, logger: Logger): ServingMode {
  const worker = workerId()
  if (worker === undefined)
    return {
      worker,
      // Consul is only contacted for the services routes name (and for published routes when opted in).
      discovery: new ConsulDiscovery({ client: consul, logger: logger.child({ component: 'discovery' }) }),
      providers: routeProviders(config.routesDir, config.consulRoutes, consul, logger),
      decidedTables: undefined,
      trafficAddress: { host: config.host, port: config.port },
      adminAddress: { host: config.adminHost, port: config.adminPort },
      servingMessage: 'portico is serving',
      serving: () => undefined,
    }
  // The primary says whether this worker listens on the traffic port itself, and on which.
  const listenPort = process.env[WORKER_PORT_VARIABLE]
  return {
    worker,
    // One blocking query per service for the host, in the primary; one reader of the route files for the host too.
    discovery: new RelayedDiscovery(),
    providers: [],
    decidedTables: tablesFromPrimary,
    trafficAddress: listenPort === undefined ? { host: config.host, port: config.port } : { host: config.host, port: Number(listenPort), reusePort: true, exclusive: true },
    adminAddress: { host: '127.0.0.1', port: 0, exclusive: true },
    servingMessage: 'worker is serving',
    serving: (registry, urls, handOver) =>
      joinPrimary(
        registry,
        urls,
        () => {
          logger.info('handing over to a new worker: draining')
          handOver()
        },
        () => {
          logger.warn('the primary is gone: finishing the requests in flight (their connections close after them), then exiting')
          handOver()
        },
      ),
  }
}
