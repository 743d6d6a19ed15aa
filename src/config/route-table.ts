import type { RouteDefinition } from './parse-route-file.js'

export interface RouteMatch<R extends RouteDefinition> {
  readonly route: R
  /** The path to send upstream: the matched prefix replaced by rewritePrefix, when the route has one. */
  readonly upstreamPath: string
}

/**
 * An immutable longest-prefix matcher. Matching looks up the path's own ancestors (`/a/b/c`, `/a/b`, `/a`, `/`) in a
 * hash map, so it costs the same with 10 routes as with 10 000: it depends on the path's depth, not the table's size.
 */
export class RouteTable<R extends RouteDefinition = RouteDefinition> {
  readonly routes: readonly R[]
  readonly #byPrefix: ReadonlyMap<string, R>

  constructor(routes: readonly R[]) {
    this.routes = Object.freeze([...routes].sort((a, b) => b.prefix.length - a.prefix.length || a.prefix.localeCompare(b.prefix)))
    this.#byPrefix = new Map(routes.map((r) => [r.prefix, r]))
  }

  /** `path` must already be normalised (see normalizePath). */
  match(path: string): RouteMatch<R> | undefined {
    let end = path.length
    for (;;) {
      const candidate = end === 0 ? '/' : path.slice(0, end)
      const route = this.#byPrefix.get(candidate)
      if (route) return { route, upstreamPath: rewrite(path, route) }
      if (end === 0) return undefined
      end = path.lastIndexOf('/', end - 1)
    }
  }
}

function rewrite(path: string, route: RouteDefinition): string {
  if (route.rewritePrefix === undefined) return path
  const rest = route.prefix === '/' ? path : path.slice(route.prefix.length)
  if (rest === '' || rest === '/') return route.rewritePrefix + (rest === '/' && !route.rewritePrefix.endsWith('/') ? '/' : '')
  return route.rewritePrefix.endsWith('/') ? route.rewritePrefix + rest.slice(1) : route.rewritePrefix + rest
}

/**
 * The client's path for a path the upstream named (a Location it sent): the inverse of the prefix rewrite, like
 * nginx's default proxy_redirect. A path outside the rewritten prefix is returned as it is.
 */
export function clientPathOf(upstreamPath: string, route: RouteDefinition): string {
  const rewritten = route.rewritePrefix
  if (rewritten === undefined) return upstreamPath
  const base = rewritten.endsWith('/') ? rewritten.slice(0, -1) : rewritten
  if (upstreamPath !== base && !upstreamPath.startsWith(`${base}/`) && base !== '') return upstreamPath
  const rest = upstreamPath.slice(base.length)
  return route.prefix === '/' ? rest || '/' : `${route.prefix}${rest}`
}
