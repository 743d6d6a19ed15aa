import type { Logger } from '../kernel/logger.js'
import type { ConsumerDefinition } from '../policies/consumers.js'
import { mergeRouteSources, type ParsedSource, type RouteSource, type SourceStatus } from './merge-sources.js'
import { formatRouteFileError, type RouteDefinition } from './parse-route-file.js'
import type { RouteProvider } from './providers/provider.js'
import { RouteParser } from './route-parser.js'
import { RouteTable } from './route-table.js'

/** What is live: the table every request reads, and the state of each source behind it. */
export interface LiveRoutes<R extends RouteDefinition> {
  readonly table: RouteTable<R>
  /** The consumers of the consumers files, merged like the routes. */
  readonly consumers: readonly ConsumerDefinition[]
  readonly sources: readonly SourceStatus[]
  readonly version: number
  readonly appliedAt: Date
}

/** A table decided elsewhere (by the primary of `--workers`): definitions merged and checked, their sources' states. */
export interface DecidedTable {
  readonly routes: readonly RouteDefinition[]
  readonly consumers: readonly ConsumerDefinition[]
  readonly sources: readonly SourceStatus[]
  readonly version: number
}

/** Hands over each table decided elsewhere; resolves once the first one has been handed over. */
export type DecidedTables = (apply: (table: DecidedTable) => void, signal: AbortSignal) => Promise<void>

export interface RouteWatcherOptions<R extends RouteDefinition> {
  /** In priority order: earlier providers win name and prefix conflicts. */
  readonly providers: readonly RouteProvider[]
  /** Instead of providers: tables another process read, checked and reported (it logs refused files, once). */
  readonly decided?: DecidedTables
  /**
   * Turns validated definitions into live routes (balancers, instance sources, policies). Called once per change; it
   * changes nothing live (a throw leaves the previous table whole): `commit` does, once the table is swapped in.
   */
  readonly compile: (routes: readonly RouteDefinition[], consumers: readonly ConsumerDefinition[]) => CompiledRoutes<R>
  readonly logger: Logger
  /** Quiet time after the last event before a change is applied; editors write files in several steps. */
  readonly debounceMs?: number
  readonly onSwap?: (live: LiveRoutes<R>) => void
}

/** A table's routes, built; `commit` makes what they need live (and retires what the table before needed). */
export interface CompiledRoutes<R> {
  readonly routes: readonly R[]
  commit(): void
}

/**
 * The one place where route configuration becomes live: collects provider snapshots, debounces them, validates and
 * merges, and swaps the table in one assignment. In-flight requests keep the route they matched.
 */
export class RouteWatcher<R extends RouteDefinition> {
  readonly #options: RouteWatcherOptions<R>
  readonly #snapshots = new Map<string, readonly RouteSource[]>()
  readonly #abort = new AbortController()
  #lastGood: ReadonlyMap<string, ParsedSource> = new Map()
  #lastInput = ''
  #timer: NodeJS.Timeout | undefined
  #live: LiveRoutes<R>
  readonly #parser = new RouteParser()
  /** The apply under way, and whether another must follow it (a snapshot came in meanwhile). */
  #applying: Promise<void> | undefined
  #again = false

  constructor(options: RouteWatcherOptions<R>) {
    this.#options = options
    this.#live = { table: new RouteTable<R>([]), consumers: [], sources: [], version: 0, appliedAt: new Date() }
  }

  current(): LiveRoutes<R> {
    return this.#live
  }

  /** Resolves when every provider has emitted once and that first table is live. */
  async start(): Promise<void> {
    const { decided } = this.#options
    if (decided) return decided((table) => this.#applyDecided(table), this.#abort.signal)
    await Promise.all(
      this.#options.providers.map((provider) =>
        provider.start((sources) => this.#receive(provider.name, sources), this.#abort.signal),
      ),
    )
    await this.#apply()
  }

  /** Forces every provider to re-read (SIGHUP) and applies the result at once. */
  async reload(): Promise<void> {
    if (this.#options.decided) return // the process that decides the tables re-reads
    await Promise.all(this.#options.providers.map((p) => p.refresh?.()))
    await this.#apply()
  }

  stop(): void {
    clearTimeout(this.#timer)
    this.#abort.abort()
    this.#parser.stop()
  }

  #receive(provider: string, sources: RouteSource[]): void {
    this.#snapshots.set(provider, sources)
    if (this.#live.version === 0) return // start() applies the first complete set
    clearTimeout(this.#timer)
    this.#timer = setTimeout(() => void this.#apply(), this.#options.debounceMs ?? 50)
  }

  /** One apply at a time; a change that arrives during one is applied right after it. */
  #apply(): Promise<void> {
    clearTimeout(this.#timer)
    if (this.#applying) {
      this.#again = true
      return this.#applying
    }
    this.#applying = (async () => {
      do {
        this.#again = false
        await this.#applyOnce()
      } while (this.#again)
    })().finally(() => {
      this.#applying = undefined
    })
    return this.#applying
  }

  /** The live routes of `definitions`, or undefined (logged) when they cannot be built: the previous table stays. */
  #compile(definitions: readonly RouteDefinition[], consumers: readonly ConsumerDefinition[]): CompiledRoutes<R> | undefined {
    try {
      return this.#options.compile(definitions, consumers)
    } catch (error) {
      this.#options.logger.error({ err: error }, 'route table could not be built; the previous table stays live')
      return undefined
    }
  }

  #applyDecided(table: DecidedTable): void {
    const compiled = this.#compile(table.routes, table.consumers)
    if (!compiled) return
    const { routes } = compiled
    this.#live = { table: new RouteTable(routes), consumers: table.consumers, sources: table.sources, version: table.version, appliedAt: new Date() }
    compiled.commit()
    this.#options.logger.debug({ version: table.version, routes: routes.length }, 'route table applied')
    this.#options.onSwap?.(this.#live)
  }

  async #applyOnce(): Promise<void> {
    const sources = this.#options.providers.flatMap((p) => this.#snapshots.get(p.name) ?? [])
    const input = JSON.stringify(sources)
    if (input === this.#lastInput) return
    this.#lastInput = input

    // Parsing runs on its own thread: requests are served meanwhile, from the table still live.
    const parsed = await this.#parser.parseAll(sources)
    const merged = mergeRouteSources(sources, this.#lastGood, (source) => parsed.get(source.source) as ParsedSource)
    const compiled = this.#compile(merged.routes, merged.consumers)
    if (!compiled) return
    const { routes } = compiled
    this.#lastGood = merged.lastGood
    this.#live = { table: new RouteTable(routes), consumers: merged.consumers, sources: merged.sources, version: this.#live.version + 1, appliedAt: new Date() }
    compiled.commit()

    const { logger } = this.#options
    for (const status of merged.sources) {
      for (const error of status.errors) {
        logger.error(
          { source: status.source, kept: status.state },
          `${formatRouteFileError(error)}${status.state === 'last-good' ? ' (its last good version stays live)' : ''}`,
        )
      }
    }
    logger.info({ version: this.#live.version, routes: routes.length, consumers: merged.consumers.length, refused: merged.sources.filter((s) => s.state !== 'applied').length }, 'route table applied')
    this.#options.onSwap?.(this.#live)
  }
}
