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
export function mergeRouteSources(
  sources: readonly RouteSource[],
  lastGood: ReadonlyMap<string, readonly RouteDefinition[]>,
  parse: (source: RouteSource) => ParsedSource = parseSource,
): MergedRoutes {
  const routes: RouteDefinition[] = []
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

  const statusOf = new Map<string, SourceStatus>()
  // Sources that serve routes now claim first, so a new file can never take a route another file already serves,
  // whatever their names; among themselves (and among new ones) the order of the list decides.
  const claimOrder = [...sources.filter((s) => lastGood.has(s.source)), ...sources.filter((s) => !lastGood.has(s.source))]
  for (const input of claimOrder) {
    const { source } = input
    const parsed = parse(input)
    const errors = parsed.errors.length > 0 ? parsed.errors : conflicts(parsed.routes)
    if (errors.length === 0) {
      claim(source, parsed.routes)
      statusOf.set(source, { source, state: 'applied', routes: parsed.routes.length, errors: [] })
      continue
    }
    const previous = lastGood.get(source)
    if (previous && conflicts(previous).length === 0) {
      claim(source, previous)
      statusOf.set(source, { source, state: 'last-good', routes: previous.length, errors })
    } else {
      statusOf.set(source, { source, state: 'refused', routes: 0, errors })
    }
  }
  const statuses = sources.flatMap((s) => statusOf.get(s.source) ?? [])
  // The table lists routes in the sources' order, whichever claimed first.
  const order = new Map(sources.map((s, i) => [s.source, i]))
  routes.sort((a, b) => (order.get(a.source.file) ?? 0) - (order.get(b.source.file) ?? 0))
  return { routes, sources: statuses, lastGood: good }
}

const at = (route: RouteDefinition): string => `${route.source.file}:${route.source.line}`

/** One source's routes or errors, as parseRouteFile gives them. */
export interface ParsedSource {
  readonly routes: readonly RouteDefinition[]
  readonly errors: readonly RouteFileError[]
}

/** Parses a source on the calling thread (`portico validate`, tests); the watcher parses off the event loop. */
export function parseSource({ source, text, readError }: RouteSource): ParsedSource {
  return readError === undefined ? parseRouteFile(source, text) : { routes: [], errors: [{ file: source, line: 1, message: readError }] }
}
