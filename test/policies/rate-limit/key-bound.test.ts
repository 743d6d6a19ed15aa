import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { MAX_LOCAL_KEYS } from '../../../src/policies/rate-limit/rate-limit.js'
import { boundedGuard, decide } from './fixtures/bounded-guard.js'

describe('rate-limit keys in memory', () => {
  it(`keeps at most ${MAX_LOCAL_KEYS} distinct keys a window; the ones past it share one bucket`, async () => {
    const guard = boundedGuard()
    for (let i = 0; i < MAX_LOCAL_KEYS; i++) expect(await decide(guard, `k${i}`)).toBe('allowed')
    // two new keys past the bound: one bucket of 2 between them
    expect([await decide(guard, 'late-1'), await decide(guard, 'late-2'), await decide(guard, 'late-3')]).toEqual(['allowed', 'allowed', 'rate_limited'])
    // keys already counted keep their own buckets
    expect(await decide(guard, 'k0')).toBe('allowed')
    expect(await decide(guard, 'k0')).toBe('rate_limited')
  }, 60_000)

  it('bounds the keys a worker of --workers sends to the primary\'s counts the same way', async () => {
    const fixture = new URL('./fixtures/worker-key-bound.ts', import.meta.url).pathname
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', fixture], { timeout: 90_000 })
    expect(JSON.parse(stdout)).toEqual({ firstKeysAllowed: MAX_LOCAL_KEYS, late: ['allowed', 'allowed', 'rate_limited'], counted: ['allowed', 'rate_limited'] })
  }, 120_000)
})
