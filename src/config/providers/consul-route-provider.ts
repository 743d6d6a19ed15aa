import type { Logger } from '../../kernel/logger.js'
import type { RouteSource } from '../merge-sources.js'
import type { RouteProvider } from './provider.js'
import { backoffDelay, pause } from '../../kernel/backoff.js'
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
      const read = async (index: number) => {
        const catalog = await client.services({ index, waitSeconds, signal })
        const tagged = Object.entries(catalog.value).filter(([, tags]) => tags.includes(ROUTE_TAG)).map(([name]) => name).sort()
        const sources = await Promise.all(
          // Registered instances, passing or not: a route is configuration, health is for the instances behind it.
          tagged.map(async (service) => routeSourceFromMeta(service, await client.serviceMeta(service))),
        )
        emit(sources.filter((s): s is RouteSource => s !== undefined))
        return catalog.index
      }
      let index = 0
      try {
        index = await read(0)
      } catch (error) {
        logger.warn({ err: error }, 'consul routes: catalog not reachable at start; no published routes until it is')
        emit([])
      }
      void (async () => {
        let failures = 0
        while (!signal.aborted) {
          try {
            const next = await read(index)
            index = next < index ? 0 : Math.max(1, next)
            failures = 0
          } catch (error) {
            if (signal.aborted) return
            index = 0 // as in consul-discovery.ts: after an outage, read afresh
            if (++failures === 1) logger.warn({ err: error }, 'consul routes: catalog query failed; published routes stay as they were')
            await pause(backoffDelay(failures, { capMs: 5_000 }), signal)
          }
        }
      })()
    },
  }
}
