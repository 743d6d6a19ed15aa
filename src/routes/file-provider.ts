import { watch } from 'node:fs'
import { readdir, readFile } from 'node:fs/promises'
import { isAbsolute, join, relative } from 'node:path'
import type { RouteProvider } from './watcher.js'
import type { RouteSource } from './merge.js'

const ROUTE_FILE = /\.ya?ml$/

/**
 * Emits the whole routes directory as a snapshot whenever anything in it changes. It only reads and emits; the
 * watcher validates. Watching the directory (not each file) also catches editors that save by rename.
 */
/** The path as the operator would type it: relative to the working directory when below it. */
export function displayPath(path: string): string {
  const relativePath = relative(process.cwd(), path)
  return relativePath === '' || relativePath.startsWith('..') || isAbsolute(relativePath) ? path : relativePath
}

export function createFileProvider(dir: string): RouteProvider {
  let emitSnapshot: ((sources: RouteSource[]) => void) | undefined
  let reading: Promise<void> | undefined
  let again = false

  const read = async (): Promise<void> => {
    const names = (await readdir(dir)).filter((n) => ROUTE_FILE.test(n)).sort()
    const sources = await Promise.all(
      names.map(async (name): Promise<RouteSource | undefined> => {
        const path = join(dir, name)
        const source = displayPath(path)
        try {
          return { source, text: await readFile(path, 'utf8') }
        } catch (error) {
          // A file removed between readdir and readFile is simply gone; the next event re-reads.
          if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
          return { source, text: '', readError: `cannot read file: ${(error as Error).message}` }
        }
      }),
    )
    emitSnapshot?.(sources.filter((s) => s !== undefined))
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
