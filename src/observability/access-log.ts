import { close, mkdirSync, open, openSync, write } from 'node:fs'
import { dirname } from 'node:path'
import type { Logger } from '../kernel/logger.js'
import type { RequestRecord } from '../proxy/gateway.js'

/** Where access log lines go: `stdout`, `stderr`, `off`, or a file path (reopened on SIGUSR1, for logrotate). */
export type AccessLogTarget = string

export interface AccessLog {
  write(record: RequestRecord): void
  /** Reopens a file target (after logrotate moved it); a no-op on stdout and stderr. */
  reopen(): void
  /** Lines dropped so far: the destination refused them (a full disk), or too much was waiting for it. */
  dropped(): number
  /** Writes out what is buffered (for a bounded time) and closes. */
  close(): Promise<void>
}

// Past this much unwritten (a stalled pipe or disk), lines are dropped rather than held: the log never costs memory
// without bound, nor blocks the event loop.
const MAX_QUEUED_BYTES = 16 * 1024 * 1024
// Lines go out in batches of about this much, or once a second, whichever comes first (nginx's `access_log buffer=
// flush=`): a write per request (a thread-pool round trip each) cost more than the line itself.
const BATCH_CHARS = 16 * 1024
const BATCH_MS = 1_000
// A destination that refused a write is asked again after this long: a full disk is not hammered, and lines written
// meanwhile wait (bounded) or are dropped.
const RETRY_MS = 1_000
// A pipe that is full for the moment (EAGAIN) is asked again sooner.
const BUSY_RETRY_MS = 100
// How often at most the gateway's log says that lines are being dropped.
const REPORT_MS = 60_000
// How long a shutdown waits for the destination to take what is queued.
const CLOSE_WAIT_MS = 2_000

/**
 * One JSON line per request. A line is the record as JSON after its time (epoch ms): JSON.stringify costs a fifth of a
 * pino call, and the record is flat, its fields fixed. Lines gather into batches that a Destination appends.
 */
export function createAccessLog(target: AccessLogTarget, logger: Logger, worker?: number): AccessLog | undefined {
  if (target === 'off') return undefined
  const destination = new Destination(target, logger)
  let batch = ''
  let lines = 0
  const flush = (): void => {
    if (batch === '') return
    destination.append(batch, lines)
    batch = ''
    lines = 0
  }
  const flushClock = setInterval(flush, BATCH_MS).unref()
  let closed = false
  const workerField = worker === undefined ? '' : `"worker":${worker},`
  return {
    write(record) {
      if (closed) return
      batch += `{"time":${Date.now()},${workerField}${JSON.stringify(record).slice(1)}\n`
      lines++
      if (batch.length >= BATCH_CHARS) flush()
    },
    reopen: () => destination.reopen(),
    dropped: () => destination.dropped,
    async close() {
      if (closed) return
      closed = true
      clearInterval(flushClock)
      flush()
      await destination.close()
    },
  }
}

/**
 * Appends batches to a file or a standard stream, one asynchronous write at a time, in order. Whatever the destination
 * does (a full disk, a vanished directory, a pipe nobody reads), requests never wait on it and nothing throws: when it
 * refuses a write, what waits is dropped and counted, and so is a batch that would take the queue past
 * MAX_QUEUED_BYTES; it is asked again after RETRY_MS. pino's SonicBoom, which this replaces here, retries a refused write of its own at exit in a loop that
 * sleeps the event loop until the disk has room again, and emits the refusal as an error that ended the process.
 */
class Destination {
  dropped = 0
  readonly #path: string | undefined
  readonly #logger: Logger
  #fd: number
  readonly #queue: { bytes: Buffer; lines: number }[] = []
  #queuedBytes = 0
  #writing = false
  #retry: NodeJS.Timeout | undefined
  #lastReport = 0
  #unreported = 0
  #drained: (() => void) | undefined

  constructor(target: string, logger: Logger) {
    this.#logger = logger
    if (target === 'stdout' || target === 'stderr') {
      this.#path = undefined
      this.#fd = target === 'stdout' ? 1 : 2
      return
    }
    this.#path = target
    // At start-up: a log file that cannot be opened stops the start with its reason.
    mkdirSync(dirname(target), { recursive: true })
    this.#fd = openSync(target, 'a')
  }

  append(text: string, lines: number): void {
    const bytes = Buffer.from(text)
    if (this.#queuedBytes + bytes.length > MAX_QUEUED_BYTES) return this.#drop(lines, 'the destination is not keeping up')
    this.#queue.push({ bytes, lines })
    this.#queuedBytes += bytes.length
    this.#writeNext()
  }

  reopen(): void {
    const path = this.#path
    if (path === undefined) return
    open(path, 'a', (error, fd) => {
      if (error) return void this.#logger.error({ err: error, file: path }, 'the access log could not be reopened; lines go on to the file open before')
      const old = this.#fd
      this.#fd = fd
      // A write under way finishes on the old file first.
      close(old, () => undefined)
    })
  }

  /** Waits (at most CLOSE_WAIT_MS) for the queue to be written, then closes a file; what is left is dropped. */
  async close(): Promise<void> {
    if (this.#queue.length > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, CLOSE_WAIT_MS)
        this.#drained = () => {
          clearTimeout(timer)
          resolve()
        }
      })
    }
    clearTimeout(this.#retry)
    for (const { lines } of this.#queue.splice(0)) this.#drop(lines, 'the gateway stopped before the destination took them')
    if (this.#path !== undefined) await new Promise<void>((resolve) => close(this.#fd, () => resolve()))
  }

  #writeNext(): void {
    const head = this.#queue[0]
    if (this.#writing || this.#retry !== undefined) return
    if (head === undefined) return this.#drained?.()
    this.#writing = true
    write(this.#fd, head.bytes, (error, written) => {
      this.#writing = false
      if (error) {
        const busy = (error as NodeJS.ErrnoException).code === 'EAGAIN' || (error as NodeJS.ErrnoException).code === 'EBUSY'
        // A full pipe is waited for. Anything else (ENOSPC, EIO, a bad descriptor) holds for what waits too: it is
        // dropped, and what comes in the next RETRY_MS is tried next (so at most that much is held for a dead disk).
        if (!busy) {
          let lines = 0
          for (const batch of this.#queue.splice(0)) lines += batch.lines
          this.#queuedBytes = 0
          this.#drop(lines, `the destination refused them (${(error as NodeJS.ErrnoException).code ?? error.message})`)
        }
        this.#retry = setTimeout(() => {
          this.#retry = undefined
          this.#writeNext()
        }, busy ? BUSY_RETRY_MS : RETRY_MS)
        return
      }
      if (written < head.bytes.length) {
        this.#queuedBytes -= written
        head.bytes = head.bytes.subarray(written)
      } else {
        this.#queue.shift()
        this.#queuedBytes -= head.bytes.length
      }
      this.#writeNext()
    })
  }

  #drop(lines: number, why: string): void {
    this.dropped += lines
    this.#unreported += lines
    const now = Date.now()
    if (now - this.#lastReport < REPORT_MS) return
    this.#lastReport = now
    this.#logger.error({ droppedLines: this.#unreported, droppedTotal: this.dropped, destination: this.#path ?? (this.#fd === 1 ? 'stdout' : 'stderr') }, `access log lines dropped: ${why}`)
    this.#unreported = 0
  }
}
