import type { ConsumerDefinition } from '../policies/consumers.js'
import { ambiguous } from './route-table.js'
import { overlapMessage, parseRouteFile, refused, type ParsedRouteFile, type RouteDefinition, type RouteFileError } from './parse-route-file.js'

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
  /** Consumers it defines (live: applied or last good). */
  readonly consumers: number
  readonly errors: readonly RouteFileError[]
}

export interface MergedRoutes {
  readonly routes: readonly RouteDefinition[]
  readonly consumers: readonly ConsumerDefinition[]
  readonly sources: readonly SourceStatus[]
  /** The version of each source that is live now: the next merge falls back to these. */
  readonly lastGood: ReadonlyMap<string, ParsedSource>
}

/**
 * Validates every source and merges them into one route list. A source with an error blocks only itself: its last
 * good version stays live (or nothing, if it never had one), and every other source applies.
 * Sources earlier in the list win name and prefix conflicts, so one operator's new file can never take a route that
 * is already served by another.
 */
export function mergeRouteSources(
  sources: readonly RouteSource[],
  lastGood: ReadonlyMap<string, ParsedSource>,
  parse: (source: RouteSource) => ParsedSource = parseSource,
): MergedRoutes {
  const routes: RouteDefinition[] = []
  const consumers: ConsumerDefinition[] = []
  const good = new Map<string, ParsedSource>()
  const names = new Map<string, RouteDefinition>()
  const prefixes = new Map<string, RouteDefinition[]>()
  const consumerNames = new Map<string, ConsumerDefinition>()
  const keyHolders = new Map<string, ConsumerDefinition>()

  const conflicts = (candidate: ParsedSource): RouteFileError[] => [
    ...candidate.routes.flatMap((route) => {
      const byName = names.get(route.name)
      const rival = prefixes.get(route.prefix)?.find((other) => ambiguous(other, route))
      return [
        ...(byName ? [{ ...route.source, message: `route name "${route.name}" is already defined at ${at(byName)}` }] : []),
        ...(rival ? [{ ...route.source, message: overlapMessage(route, rival, at(rival)) }] : []),
      ]
    }),
    ...candidate.consumers.flatMap((consumer) => {
      const byName = consumerNames.get(consumer.name)
      const holders = consumer.apiKeys.flatMap((hash) => keyHolders.get(hash) ?? [])
      return [
        ...(byName ? [{ ...consumer.source, message: `consumer name "${consumer.name}" is already defined at ${at(byName)}` }] : []),
        ...holders.map((holder) => ({ ...consumer.source, message: `consumer "${consumer.name}" has a key of consumer "${holder.name}" at ${at(holder)}` })),
      ]
    }),
  ]
  const claim = (source: string, candidate: ParsedSource) => {
    for (const route of candidate.routes) {
      names.set(route.name, route)
      prefixes.set(route.prefix, [...(prefixes.get(route.prefix) ?? []), route])
      routes.push(route)
    }
    for (const consumer of candidate.consumers) {
      consumerNames.set(consumer.name, consumer)
      for (const hash of consumer.apiKeys) keyHolders.set(hash, consumer)
      consumers.push(consumer)
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
    const errors = parsed.errors.length > 0 ? parsed.errors : conflicts(parsed)
    if (errors.length === 0) {
      claim(source, parsed)
      statusOf.set(source, { source, state: 'applied', routes: parsed.routes.length, consumers: parsed.consumers.length, errors: [] })
      continue
    }
    const previous = lastGood.get(source)
    if (previous && conflicts(previous).length === 0) {
      claim(source, previous)
      statusOf.set(source, { source, state: 'last-good', routes: previous.routes.length, consumers: previous.consumers.length, errors })
    } else {
      statusOf.set(source, { source, state: 'refused', routes: 0, consumers: 0, errors })
    }
  }
  const statuses = sources.flatMap((s) => statusOf.get(s.source) ?? [])
  // The table lists routes in the sources' order, whichever claimed first.
  const order = new Map(sources.map((s, i) => [s.source, i]))
  const bySource = (a: { source: { file: string } }, b: { source: { file: string } }) => (order.get(a.source.file) ?? 0) - (order.get(b.source.file) ?? 0)
  routes.sort(bySource)
  consumers.sort(bySource)
  return { routes, consumers, sources: statuses, lastGood: good }
}

const at = (defined: { source: { file: string; line: number } }): string => `${defined.source.file}:${defined.source.line}`

/** One source's routes and consumers, or its errors, as parseRouteFile gives them. */
export type ParsedSource = ParsedRouteFile

/** Parses a source on the calling thread (`portico validate`, tests); the watcher parses off the event loop. */
export function parseSource({ source, text, readError }: RouteSource): ParsedSource {
  return readError === undefined ? parseRouteFile(source, text) : refused([{ file: source, line: 1, message: readError }])
}
