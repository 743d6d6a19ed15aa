import { backoffDelay, pause } from '../kernel/backoff.js'
import { nextIndex } from './to-instances.js'

export interface BlockingQueryOptions<T> {
  /** One blocking read from `index` (0: answer at once); resolves with Consul's answer and its X-Consul-Index. */
  readonly read: (index: number, signal: AbortSignal) => Promise<{ readonly value: T; readonly index: number }>
  /** Every answer, the first included. */
  readonly onValue: (value: T) => void
  /** A failed read: the caller keeps what it has. `failures` counts the failures in a row (1 on the first). */
  readonly onError: (error: unknown, failures: number) => void
  readonly signal: AbortSignal
}

/**
 * THE blocking-query loop of the Consul integration (consul-discovery and the published-routes provider both run it).
 * Consul's rules: send back the index of the last answer; start over at 0 when it goes backwards; rate-limit answers
 * that return at once with the same index (they would spin); after a failure, back off with jitter and read afresh,
 * since the agent that answers next may be another one with its own index history.
 * Resolves after the first read (answered or failed); the loop then runs until the signal aborts.
 */
export async function runBlockingQuery<T>(options: BlockingQueryOptions<T>): Promise<void> {
  const { read, onValue, onError, signal } = options
  let index = 0
  let failures = 0
  let wait = 0
  const once = async (): Promise<void> => {
    if (wait > 0) await pause(wait, signal)
    wait = 0
    if (signal.aborted) return
    try {
      const started = Date.now()
      const result = await read(index, signal)
      const previous = index
      index = nextIndex(index, result.index)
      failures = 0
      onValue(result.value)
      if (index === previous && Date.now() - started < SPIN_GUARD_MS) wait = SPIN_GUARD_MS
    } catch (error) {
      if (signal.aborted) return
      index = 0
      onError(error, ++failures)
      wait = backoffDelay(failures, { baseMs: 100, capMs: 5_000 })
    }
  }
  await once()
  void (async () => {
    while (!signal.aborted) await once()
  })()
}

/** An answer faster than this with an unchanged index is a spin: wait this long before the next read. */
export const SPIN_GUARD_MS = 50
