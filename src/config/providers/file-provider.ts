import { watch } from 'node:fs'
import type { RouteSource } from '../merge-sources.js'
import type { RouteProvider } from './provider.js'
import { readRouteDir } from './route-dir.js'

/**
 * Emits the whole routes directory as a snapshot whenever anything in it changes. It only reads and emits; the
 * watcher validates. Watching the directory (not each file) also catches editors that save by rename.
 */
export function createFileProvider(dir: string): RouteProvider {
  let emitSnapshot: ((sources: RouteSource[]) => void) | undefined
  let reading: Promise<void> | undefined
  let again = false

  const read = async (): Promise<void> => {
    const sources = await readRouteDir(dir)
    emitSnapshot?.(sources)
  }
  // Coalesce bursts of events: at most one read runs, and one more follows it if anything changed meanwhile.
  const refresh = async (): Promise<void> => {
    if (reading) {
      again = true
      return reading
    }
    reading = (async () => {
      do {
        again = false
        await read()
      } while (again)
    })().finally(() => {
      reading = undefined
    })
    return reading
  }

  return {
    name: `files:${dir}`,
    refresh,
    async start(emit, signal) {
      emitSnapshot = emit
      await read()
      const watcher = watch(dir, { signal })
      watcher.on('change', () => void refresh().catch(() => undefined))
      // The directory vanished or became unreadable: keep serving what is loaded; refresh reports it on reload.
      watcher.on('error', () => undefined)
    },
  }
}
