import { parseRouteFile, type RouteDefinition, type RouteFileError } from './parse-route-file.js'

/** One unit of route configuration as a provider emits it: a route file, or a service's routes from Consul meta. */
export interface RouteSource {
  /** File path, or e.g. `consul:users`; the name used in `file:line: message`. */
  readonly source: string
  readonly text: string
  /** Set when the source could not be read; it is then refused like an invalid one. */
  readonly readError?: string
}

export interface SourceStatus {
  readonly source: string
  /** `applied`: this version is live; `last-good`: refused, its previous version is live; `refused`: refused, nothing live. */
  readonly state: 'applied' | 'last-good' | 'refused'
  readonly routes: number
  readonly errors: readonly RouteFileError[]
}

export interface MergedRoutes {
  readonly routes: readonly RouteDefinition[]
  readonly sources: readonly SourceStatus[]
  /** The version of each source that is live now: the next merge falls back to these. */
  readonly lastGood: ReadonlyMap<string, readonly RouteDefinition[]>
}

/**
 * Validates every source and merges them into one route list. A source with an error blocks only itself: its last
 * good version stays live (or nothing, if it never had one), and every other source applies.
 * Sources earlier in the list win name and prefix conflicts, so one operator's new file can never take a route that
 * is already served by another.
 */
export function mergeRouteSources(sources: readonly RouteSource[], lastGood: ReadonlyMap<string, readonly RouteDefinition[]>): MergedRoutes {
  const routes: RouteDefinition[] = []
  const statuses: SourceStatus[] = []
  const good = new Map<string, readonly RouteDefinition[]>()
  const names = new Map<string, RouteDefinition>()
  const prefixes = new Map<string, RouteDefinition>()

  const conflicts = (candidate: readonly RouteDefinition[]): RouteFileError[] =>
    candidate.flatMap((route) => {
      const byName = names.get(route.name)
      const byPrefix = prefixes.get(route.prefix)
      return [
        ...(byName ? [{ ...route.source, message: `route name "${route.name}" is already defined at ${at(byName)}` }] : []),
        ...(byPrefix ? [{ ...route.source, message: `prefix "${route.prefix}" is already routed by "${byPrefix.name}" at ${at(byPrefix)}` }] : []),
      ]
    })
  const claim = (source: string, candidate: readonly RouteDefinition[]) => {
    for (const route of candidate) {
      names.set(route.name, route)
      prefixes.set(route.prefix, route)
      routes.push(route)
    }
    good.set(source, candidate)
  }

  for (const { source, text, readError } of sources) {
    const parsed = readError === undefined ? parseRouteFile(source, text) : { routes: [], errors: [{ file: source, line: 1, message: readError }] }
    const errors = parsed.errors.length > 0 ? parsed.errors : conflicts(parsed.routes)
    if (errors.length === 0) {
      claim(source, parsed.routes)
      statuses.push({ source, state: 'applied', routes: parsed.routes.length, errors: [] })
      continue
    }
    const previous = lastGood.get(source)
    if (previous && conflicts(previous).length === 0) {
      claim(source, previous)
      statuses.push({ source, state: 'last-good', routes: previous.length, errors })
    } else {
      statuses.push({ source, state: 'refused', routes: 0, errors })
    }
  }
  return { routes, sources: statuses, lastGood: good }
}

const at = (route: RouteDefinition): string => `${route.source.file}:${route.source.line}`
