import { once } from 'node:events'
import { pino } from 'pino'
import type { RequestRecord } from '../proxy/gateway.js'

/** Where access log lines go: `stdout`, `stderr`, `off`, or a file path (reopened on SIGUSR1, for logrotate). */
export type AccessLogTarget = string

export interface AccessLog {
  write(record: RequestRecord): void
  /** Reopens a file target (after logrotate moved it); a no-op on stdout and stderr. */
  reopen(): void
  /** Writes out what is buffered and closes: nothing is lost at shutdown. */
  close(): Promise<void>
}

// Past this much unwritten (a stalled pipe or disk), lines are dropped rather than held: the log never costs memory
// without bound, nor blocks the event loop.
const MAX_BUFFERED_BYTES = 16 * 1024 * 1024
// Lines go out in batches of about this much, or once a second, whichever comes first (nginx's `access_log buffer=
// flush=`): a write per request (a thread-pool round trip each) cost more than the line itself.
const BATCH_CHARS = 16 * 1024
const BATCH_MS = 1_000

/**
 * One JSON line per request, written asynchronously (pino's SonicBoom destination), so a slow disk or a full pipe
 * never blocks the requests. Lines gather here and reach SonicBoom a batch at a time: SonicBoom measures the bytes of
 * what it holds on every write, which flattened its growing buffer once per line (5.6 µs a line over JSON.stringify;
 * 3.1 in batches). A line is the record as JSON after its time (epoch ms): JSON.stringify costs a fifth of a pino
 * call, and the record is flat, its fields fixed.
 */
export function createAccessLog(target: AccessLogTarget, worker?: number): AccessLog | undefined {
  if (target === 'off') return undefined
  const file = target !== 'stdout' && target !== 'stderr'
  const destination = pino.destination({
    dest: target === 'stdout' ? 1 : target === 'stderr' ? 2 : target,
    sync: false,
    mkdir: file,
    maxLength: MAX_BUFFERED_BYTES,
  })
  let batch = ''
  const flush = (): void => {
    if (batch === '') return
    destination.write(batch)
    batch = ''
  }
  const flushClock = setInterval(flush, BATCH_MS).unref()
  let closed = false
  const workerField = worker === undefined ? '' : `"worker":${worker},`
  return {
    write(record) {
      if (closed) return
      batch += `{"time":${Date.now()},${workerField}${JSON.stringify(record).slice(1)}\n`
      if (batch.length >= BATCH_CHARS) flush()
    },
    reopen() {
      if (file && !closed) destination.reopen()
    },
    async close() {
      if (closed) return
      closed = true
      clearInterval(flushClock)
      flush()
      const done = once(destination, 'close')
      destination.end()
      await done
    },
  }
}
