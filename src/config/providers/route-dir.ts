import { readdir, readFile, stat } from 'node:fs/promises'
import { isAbsolute, join, relative } from 'node:path'
import type { RouteSource } from '../merge-sources.js'
import { ROUTE_FILE_LIMITS } from '../parse-route-file.js'

const ROUTE_FILE = /\.ya?ml$/

/** The path as the operator would type it: relative to the working directory when below it. */
export function displayPath(path: string): string {
  const relativePath = relative(process.cwd(), path)
  return relativePath === '' || relativePath.startsWith('..') || isAbsolute(relativePath) ? path : relativePath
}

/**
 * Every route file of a directory, in name order, as the gateway and `portico validate` both load it. Never reads
 * what is not a regular file (a FIFO would block the read for ever) nor a file over the size bound; those, and files
 * that cannot be read, come back as sources with a `readError`, so they are refused on their own like a bad edit.
 * Throws only when the directory itself cannot be listed.
 */
export async function readRouteDir(dir: string): Promise<RouteSource[]> {
  const names = (await readdir(dir)).filter((n) => ROUTE_FILE.test(n)).sort()
  const sources = await Promise.all(names.map((name) => readRouteFile(join(dir, name))))
  return sources.filter((s) => s !== undefined)
}

async function readRouteFile(path: string): Promise<RouteSource | undefined> {
  const source = displayPath(path)
  const refused = (readError: string): RouteSource => ({ source, text: '', readError })
  try {
    const info = await stat(path)
    if (!info.isFile()) return refused('not a regular file; route files must be plain files (or links to them)')
    if (info.size > ROUTE_FILE_LIMITS.bytes) {
      return refused(`file is ${info.size} bytes; a route file may be at most ${ROUTE_FILE_LIMITS.bytes} bytes (split it into several files)`)
    }
    return { source, text: await readFile(path, 'utf8') }
  } catch (error) {
    // A file removed between readdir and the read is simply gone; the next event re-reads.
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    return refused(`cannot read file: ${(error as Error).message}`)
  }
}
