import { parentPort } from 'node:worker_threads'
import { parseSource } from './merge-sources.js'
import type { RouteSource } from './merge-sources.js'

/** The route parser's thread: one source in, its routes or errors out (structured clone keeps Sets and Maps). */
parentPort?.on('message', ({ id, source }: { id: number; source: RouteSource }) => {
  parentPort?.postMessage({ id, parsed: parseSource(source) })
})
// Loaded (with the parser and the policies' schemas): the parse budget starts counting from here.
parentPort?.postMessage({ ready: true })
