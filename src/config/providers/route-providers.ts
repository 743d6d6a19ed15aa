import type { ConsulClient } from '../../discovery/consul-client.js'
import type { Logger } from '../../kernel/logger.js'
import { createConsulRouteProvider } from './consul-route-provider.js'
import { createFileProvider } from './file-provider.js'
import type { RouteProvider } from './provider.js'

/** Where route tables come from, in priority order: the routes directory, then (opted in) services' own routes in Consul. */
export function routeProviders(routesDir: string, consulRoutes: boolean, consul: ConsulClient, logger: Logger): RouteProvider[] {
  return [createFileProvider(routesDir), ...(consulRoutes ? [createConsulRouteProvider(consul, logger.child({ component: 'consul-routes' }))] : [])]
}
