import type { RouteDefinition } from './parse-route-file.js'

export interface RouteMatch<R extends RouteDefinition> {
  readonly route: R
  /** The path to send upstream: the matched prefix replaced by rewritePrefix, when the route has one. */
  readonly upstreamPath: string
}

/** What a route's conditions read of a request. */
export interface MatchedRequest {
  readonly method: string
  readonly headers: Readonly<Record<string, string | string[] | undefined>>
}

/**
 * An immutable longest-prefix matcher. Matching looks up the path's own ancestors (`/a/b/c`, `/a/b`, `/a`, `/`) in a
 * hash map, so it costs the same with 10 routes as with 10 000: it depends on the path's depth, not the table's size.
 * At one prefix, the routes there are tried in order of their conditions (`hosts`, `headers`, `methods`), the most
 * first; the load refuses two that could take the same request with as many conditions.
 */
export class RouteTable<R extends RouteDefinition = RouteDefinition> {
  readonly routes: readonly R[]
  readonly names: ReadonlySet<string>
  readonly #byPrefix: ReadonlyMap<string, readonly R[]>

  constructor(routes: readonly R[]) {
    this.routes = Object.freeze([...routes].sort((a, b) => b.prefix.length - a.prefix.length || a.prefix.localeCompare(b.prefix)))
    this.names = new Set(routes.map((route) => route.name))
    const byPrefix = new Map<string, R[]>()
    for (const route of routes) byPrefix.set(route.prefix, [...(byPrefix.get(route.prefix) ?? []), route])
    for (const list of byPrefix.values()) list.sort((a, b) => conditionCount(b) - conditionCount(a))
    this.#byPrefix = byPrefix
  }

  /**
   * The route of the longest prefix whose conditions `request` meets; when none meets them but for the method, that
   * route (its caller answers 405 with what it takes). Without `request`, conditions are not read. `path` must
   * already be normalised (see normalizePath).
   */
  match(path: string, request?: MatchedRequest): RouteMatch<R> | undefined {
    let methodOnly: R | undefined
    let host: string | undefined | null = null
    let end = path.length
    for (;;) {
      const candidates = this.#byPrefix.get(end === 0 ? '/' : path.slice(0, end))
      if (candidates)
        for (const route of candidates) {
          if (request === undefined) return { route, upstreamPath: rewrite(path, route) }
          if (route.hosts !== undefined && !hostMatches(route.hosts, host === null ? (host = hostOf(request)) : host)) continue
          if (route.headers !== undefined && !headersMatch(route.headers, request)) continue
          if (route.methods !== undefined && !route.methods.has(request.method)) {
            methodOnly ??= route
            continue
          }
          return { route, upstreamPath: rewrite(path, route) }
        }
      if (end === 0) return methodOnly && { route: methodOnly, upstreamPath: rewrite(path, methodOnly) }
      end = path.lastIndexOf('/', end - 1)
    }
  }
}

/** How many conditions a route sets: at one prefix, the route with more is tried first. */
export function conditionCount(route: RouteDefinition): number {
  return (route.hosts === undefined ? 0 : 1) + (route.headers?.size ?? 0) + (route.methods === undefined ? 0 : 1)
}

/**
 * Whether two routes of one prefix could take the same request with as many conditions each: then neither could be
 * said to win, and the load refuses the second. Hosts overlap when one name (or wildcard) could be the other's.
 */
export function ambiguous(a: RouteDefinition, b: RouteDefinition): boolean {
  if (a.prefix !== b.prefix || conditionCount(a) !== conditionCount(b)) return false
  const hosts = a.hosts === undefined || b.hosts === undefined || a.hosts.some((x) => (b.hosts as readonly string[]).some((y) => hostsOverlap(x, y)))
  const methods = a.methods === undefined || b.methods === undefined || [...a.methods].some((m) => b.methods?.has(m))
  const headers = [...(a.headers ?? [])].every(([name, value]) => b.headers?.get(name) === undefined || b.headers.get(name) === value)
  return hosts && methods && headers
}

/** The request's host without its port, in lower case; undefined without a Host. */
function hostOf(request: MatchedRequest): string | undefined {
  const raw = request.headers.host
  const host = Array.isArray(raw) ? raw[0] : raw
  if (host === undefined) return undefined
  const bracket = host.startsWith('[') ? host.indexOf(']') : -1
  const colon = bracket === -1 ? host.lastIndexOf(':') : host.indexOf(':', bracket)
  return (colon === -1 ? host : host.slice(0, colon)).toLowerCase()
}

function hostMatches(hosts: readonly string[], host: string | undefined): boolean {
  if (host === undefined) return false
  for (const pattern of hosts) {
    if (pattern === host) return true
    // `*.example.org`: one label, any, in front of the rest.
    if (pattern.startsWith('*.') && host.length >= pattern.length && host.endsWith(pattern.slice(1)) && host.indexOf('.') === host.length - pattern.length + 1) return true
  }
  return false
}

function hostsOverlap(a: string, b: string): boolean {
  return a === b || hostMatches([a], b.startsWith('*.') ? `x${b.slice(1)}` : b) || hostMatches([b], a.startsWith('*.') ? `x${a.slice(1)}` : a)
}

function headersMatch(wanted: ReadonlyMap<string, string>, request: MatchedRequest): boolean {
  for (const [name, value] of wanted) {
    const sent = request.headers[name]
    if ((Array.isArray(sent) ? sent[0] : sent) !== value) return false
  }
  return true
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
