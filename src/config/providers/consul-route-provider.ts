import type { Logger } from '../../kernel/logger.js'
import type { RouteSource } from '../merge-sources.js'
import type { RouteProvider } from './provider.js'
import { runBlockingQuery } from '../../discovery/blocking-query.js'
import type { ConsulClient } from '../../discovery/consul-client.js'

/** Services tagged with this publish their own route through service meta. */
export const ROUTE_TAG = 'portico-route'

/**
 * A service's route as its Consul meta describes it, as route-file text, so the watcher validates it like any file.
 * `portico-prefix` is required; `portico-name` (default: the service name), `portico-rewrite-prefix` and
 * `portico-websocket` are optional.
 */
export function routeSourceFromMeta(service: string, metas: readonly Readonly<Record<string, string>>[]): RouteSource | undefined {
  const meta = metas.find((m) => m['portico-prefix'])
  if (!meta) return undefined
  const route: Record<string, unknown> = { name: meta['portico-name'] ?? service, prefix: meta['portico-prefix'], service }
  if (meta['portico-rewrite-prefix']) route.rewritePrefix = meta['portico-rewrite-prefix']
  if (meta['portico-websocket'] === 'true') route.websocket = true
  // JSON is YAML: one line, so every error points at line 1 of `consul:<service>`.
  return { source: `consul:${service}`, text: JSON.stringify({ routes: [route] }) }
}

/**
 * Opt-in route provider: emits the routes that services publish in their Consul meta whenever the catalog changes.
 * Route files come first in the watcher, so a file wins any conflict with a published route.
 */
export function createConsulRouteProvider(client: ConsulClient, logger: Logger, waitSeconds = 30): RouteProvider {
  return {
    name: 'consul-routes',
    async start(emit, signal) {
      let started = false
      await runBlockingQuery({
        signal,
        read: async (index, signal) => {
          const catalog = await client.services({ index, waitSeconds, signal })
          const tagged = Object.entries(catalog.value).filter(([, tags]) => tags.includes(ROUTE_TAG)).map(([name]) => name).sort()
          // Registered instances, passing or not: a route is configuration, health is for the instances behind it.
          const sources = await Promise.all(tagged.map(async (service) => routeSourceFromMeta(service, await client.serviceMeta(service))))
          return { value: sources.filter((s): s is RouteSource => s !== undefined), index: catalog.index }
        },
        onValue: emit,
        onError: (error, failures) => {
          if (failures === 1) logger.warn({ err: error }, 'consul routes: catalog query failed; published routes stay as they were')
          // Not reachable at start: the watcher waits for a first snapshot from every provider.
          if (!started) emit([])
        },
      })
      started = true
    },
  }
}
