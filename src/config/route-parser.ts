import { Worker } from 'node:worker_threads'
import type { ParsedSource, RouteSource } from './merge-sources.js'
import { refused } from './parse-route-file.js'

/** A source that takes longer than this to parse is refused (and the thread that parsed it replaced). */
export const PARSE_BUDGET_MS = 5_000

/**
 * Parses route sources on a thread of their own, so that no file, however big or pathological within its bounds,
 * holds up the requests on the event loop. Each source is parsed once per text (a reload re-parses only what
 * changed), and one that takes longer than PARSE_BUDGET_MS is refused on its own.
 */
export class RouteParser {
  readonly #cache = new Map<string, { readonly text: string; readonly readError: string | undefined; readonly parsed: ParsedSource }>()
  #worker: Worker | undefined
  /** Resolves when the thread has loaded: starting it (from TypeScript, under a busy machine) is not parsing. */
  #ready: Promise<void> = Promise.resolve()
  #loaded: (() => void) | undefined
  #nextId = 0
  #pending = new Map<number, { readonly source: string; readonly resolve: (parsed: ParsedSource) => void }>()

  /** Every source's routes or errors, in a map by source name; never rejects. */
  async parseAll(sources: readonly RouteSource[]): Promise<Map<string, ParsedSource>> {
    const results = new Map<string, ParsedSource>()
    // One at a time: a runaway file is then known by name, and only its own parse is lost with the thread.
    for (const source of sources) results.set(source.source, await this.#parse(source))
    for (const name of this.#cache.keys()) if (!results.has(name)) this.#cache.delete(name)
    return results
  }

  stop(): void {
    void this.#worker?.terminate()
    this.#worker = undefined
  }

  async #parse(source: RouteSource): Promise<ParsedSource> {
    const cached = this.#cache.get(source.source)
    if (cached && cached.text === source.text && cached.readError === source.readError) return cached.parsed
    const parsed = await this.#onThread(source)
    this.#cache.set(source.source, { text: source.text, readError: source.readError, parsed })
    return parsed
  }

  async #onThread(source: RouteSource): Promise<ParsedSource> {
    const worker = this.#thread()
    await this.#ready
    if (this.#worker !== worker) return refused([{ file: source.source, line: 1, message: 'could not be parsed: the parser thread did not start' }])
    const id = ++this.#nextId
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id)
        this.stop() // the thread is busy with it for who knows how long: a fresh one takes the next source
        resolve(refused([{ file: source.source, line: 1, message: `took more than ${PARSE_BUDGET_MS / 1000} s to parse; simplify or split the file` }]))
      }, PARSE_BUDGET_MS)
      this.#pending.set(id, {
        source: source.source,
        resolve: (parsed) => {
          clearTimeout(timer)
          resolve(parsed)
        },
      })
      worker.postMessage({ id, source })
    })
  }

  #thread(): Worker {
    if (this.#worker) return this.#worker
    // Built, this module is JavaScript. Run from source (tests, tsx), the thread needs tsx's loader registered first.
    const typescript = import.meta.url.endsWith('.ts')
    const entry = new URL(typescript ? './parse-worker.ts' : './parse-worker.js', import.meta.url)
    const options = { resourceLimits: { maxOldGenerationSizeMb: 256 } } // a file past the bounds takes the thread's memory, not the gateway's
    const worker = typescript
      ? new Worker(`import('tsx/esm/api').then(({ register }) => { register(); return import(${JSON.stringify(entry.href)}) })`, { ...options, eval: true })
      : new Worker(entry, options)
    this.#ready = new Promise((resolve) => (this.#loaded = resolve))
    worker.on('message', (message: { ready: true } | { id: number; parsed: ParsedSource }) => {
      if ('ready' in message) return this.#loaded?.()
      this.#pending.get(message.id)?.resolve(message.parsed)
      this.#pending.delete(message.id)
    })
    worker.on('error', (error) => this.#fail(worker, error))
    worker.on('exit', () => this.#fail(worker, new Error('the route parser thread exited')))
    worker.unref() // after the listeners: adding a 'message' listener refs the thread again
    this.#worker = worker
    return worker
  }

  /** The thread died (out of memory, say): what it was parsing is refused, the next parse starts a new one. */
  #fail(worker: Worker, error: Error): void {
    if (this.#worker === worker) {
      this.#worker = undefined
      this.#loaded?.() // whoever waits for it to start hears that it will not
    }
    for (const [id, { source, resolve }] of this.#pending) {
      this.#pending.delete(id)
      resolve(refused([{ file: source, line: 1, message: `could not be parsed: ${error.message}` }]))
    }
  }
}
