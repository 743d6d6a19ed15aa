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

/**
 * One JSON line per request, written asynchronously (pino's SonicBoom destination): lines queue in memory while a
 * write is under way and go out together, so a slow disk or a full pipe never blocks the requests.
 */
export function createAccessLog(target: AccessLogTarget): AccessLog | undefined {
  if (target === 'off') return undefined
  const file = target !== 'stdout' && target !== 'stderr'
  const destination = pino.destination({ dest: target === 'stdout' ? 1 : target === 'stderr' ? 2 : target, sync: false, mkdir: file, maxLength: MAX_BUFFERED_BYTES })
  const logger = pino({ base: null }, destination)
  let closed = false
  return {
    write(record) {
      if (!closed) logger.info(record, 'request')
    },
    reopen() {
      if (file && !closed) destination.reopen()
    },
    async close() {
      if (closed) return
      closed = true
      const done = once(destination, 'close')
      destination.end()
      await done
    },
  }
}
