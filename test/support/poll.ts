/**
 * Polls `probe` until it returns a value other than undefined/false, or throws after `timeoutMs`.
 * Tests wait for conditions with this, never with a bare sleep.
 */
export async function waitFor<T>(
  probe: () => T | Promise<T>,
  { timeoutMs = 5_000, intervalMs = 20, what = 'condition' }: { timeoutMs?: number; intervalMs?: number; what?: string } = {},
): Promise<Exclude<T, undefined | false>> {
  const deadline = Date.now() + timeoutMs
  let lastError: unknown
  for (;;) {
    try {
      const value = await probe()
      if (value !== undefined && value !== false) return value as Exclude<T, undefined | false>
    } catch (error) {
      lastError = error
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`, { cause: lastError })
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
}

/** How long `probe` took to become true, in ms; for "within 1 s" assertions. */
export async function timeUntil(probe: () => boolean | Promise<boolean>, options: { timeoutMs?: number; what?: string } = {}): Promise<number> {
  const started = Date.now()
  await waitFor(probe, { intervalMs: 10, ...options })
  return Date.now() - started
}
