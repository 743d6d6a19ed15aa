import { describe, expect, it } from 'vitest'
import { runBlockingQuery, SPIN_GUARD_MS } from '../../src/discovery/blocking-query.js'
import { waitFor } from '../support/poll.js'

/** Consul answers scripted per call: each read records the index it was sent with. */
function scripted(answers: (number | Error)[]) {
  const sentIndexes: number[] = []
  const readAt: number[] = []
  const read = async (index: number) => {
    sentIndexes.push(index)
    readAt.push(Date.now())
    const answer = answers.shift() ?? new Promise<never>(() => undefined)
    if (answer instanceof Error) throw answer
    return { value: `v${await answer}`, index: await answer }
  }
  return { read, sentIndexes, readAt }
}

describe('runBlockingQuery', () => {
  it('sends back the last index, starts over when it goes backwards or after a failure', async () => {
    const consul = scripted([5, 9, 3, new Error('agent gone'), 4, 7])
    const values: string[] = []
    const failures: number[] = []
    const abort = new AbortController()
    await runBlockingQuery({ read: consul.read, onValue: (v) => values.push(v), onError: (_e, n) => failures.push(n), signal: abort.signal })
    await waitFor(() => consul.sentIndexes.length === 7, { what: 'seven reads' })
    abort.abort()
    expect(consul.sentIndexes).toEqual([0, 5, 9, 0, 0, 4, 7])
    expect(values).toEqual(['v5', 'v9', 'v3', 'v4', 'v7'])
    expect(failures).toEqual([1])
  })

  it('rate-limits answers that come back at once with the same index', async () => {
    const consul = scripted([5, 5, 5])
    const abort = new AbortController()
    await runBlockingQuery({ read: consul.read, onValue: () => undefined, onError: () => undefined, signal: abort.signal })
    await waitFor(() => consul.readAt.length === 4, { what: 'four reads' })
    abort.abort()
    // the first answer moves the index (0 → 5); the two after it repeat it and each waits the guard
    expect(consul.readAt[2]! - consul.readAt[1]!).toBeGreaterThanOrEqual(SPIN_GUARD_MS - 5)
    expect(consul.readAt[3]! - consul.readAt[2]!).toBeGreaterThanOrEqual(SPIN_GUARD_MS - 5)
  })
})
