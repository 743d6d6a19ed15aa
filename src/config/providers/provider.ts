import type { RouteSource } from '../merge-sources.js'

/** Something that knows route configuration (the routes directory, Consul). It only emits whole snapshots. */
export interface RouteProvider {
  readonly name: string
  /** Starts emitting; resolves once the first snapshot has been emitted. */
  start(emit: (sources: RouteSource[]) => void, signal: AbortSignal): Promise<void>
  /** Re-reads and re-emits now (SIGHUP). */
  refresh?(): Promise<void>
}
