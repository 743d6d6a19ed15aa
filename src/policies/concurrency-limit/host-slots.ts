import cluster, { type Worker } from 'node:cluster'

/** A worker asks the primary for a slot of `key`, or gives one back. */
interface SlotRequest {
  readonly portico: 'slots'
  readonly op: 'take' | 'release'
  readonly key: string
  readonly limit: number
  readonly id: number
}

interface SlotAnswer {
  readonly portico: 'slots'
  readonly id: number
  readonly granted: boolean
}

const isSlotRequest = (value: unknown): value is SlotRequest => {
  const m = value as Partial<SlotRequest> | undefined
  return m?.portico === 'slots' && (m.op === 'take' || m.op === 'release') && typeof m.key === 'string' && typeof m.limit === 'number' && typeof m.id === 'number'
}

/**
 * A route's concurrency slots for the workers of one host without Redis: the primary counts them (one IPC round trip
 * to take, none to give back), so `limit` holds for the host whatever worker a request reaches.
 */
export class HostSlots {
  readonly #key: string
  readonly #limit: number
  readonly #waiting = new Map<number, (granted: boolean) => void>()
  #sequence = 0
  #held = 0
  readonly #onMessage = (value: unknown) => {
    const answer = value as Partial<SlotAnswer> | undefined
    if (answer?.portico !== 'slots' || typeof answer.id !== 'number') return
    const resolve = this.#waiting.get(answer.id)
    this.#waiting.delete(answer.id)
    if (resolve) return resolve(answer.granted === true)
    // Granted after the request gave up waiting: nobody uses it.
    if (answer.granted === true) process.send?.({ portico: 'slots', op: 'release', key: this.#key, limit: this.#limit, id: 0 } satisfies SlotRequest)
  }

  /** Only in a worker of `--workers`. */
  static available(): boolean {
    return cluster.isWorker
  }

  constructor(route: string, limit: number) {
    // The limit is part of the key: a reload that changes it starts a count of its own, like the Redis slots' script.
    this.#key = `${route}:${limit}`
    this.#limit = limit
    process.on('message', this.#onMessage)
  }

  get held(): number {
    return this.#held
  }

  /** True when the slot was granted; rejects when the primary does not answer within a second. */
  take(): Promise<boolean> {
    const id = ++this.#sequence
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(id)
        reject(new Error('the primary did not answer for a concurrency slot'))
      }, 1_000)
      this.#waiting.set(id, (granted) => {
        clearTimeout(timer)
        if (granted) this.#held++
        resolve(granted)
      })
      process.send?.({ portico: 'slots', op: 'take', key: this.#key, limit: this.#limit, id } satisfies SlotRequest)
    })
  }

  release(): void {
    this.#held--
    process.send?.({ portico: 'slots', op: 'release', key: this.#key, limit: this.#limit, id: 0 } satisfies SlotRequest)
  }

  stop(): void {
    process.off('message', this.#onMessage)
  }
}

/** In the primary: counts every worker's slots, and gives back those of a worker that exits holding some. */
export function serveHostSlots(): void {
  const inUse = new Map<string, number>()
  const byWorker = new Map<number, Map<string, number>>()
  const change = (worker: Worker, key: string, delta: number) => {
    inUse.set(key, (inUse.get(key) ?? 0) + delta)
    let held = byWorker.get(worker.id)
    if (!held) byWorker.set(worker.id, (held = new Map()))
    held.set(key, (held.get(key) ?? 0) + delta)
  }
  cluster.on('message', (worker, value) => {
    if (!isSlotRequest(value)) return
    if (value.op === 'release') {
      if ((byWorker.get(worker.id)?.get(value.key) ?? 0) > 0) change(worker, value.key, -1)
      return
    }
    const granted = (inUse.get(value.key) ?? 0) < value.limit
    if (granted) change(worker, value.key, 1)
    if (worker.isConnected()) worker.send({ portico: 'slots', id: value.id, granted } satisfies SlotAnswer)
  })
  cluster.on('exit', (worker) => {
    for (const [key, count] of byWorker.get(worker.id) ?? []) inUse.set(key, (inUse.get(key) ?? 0) - count)
    byWorker.delete(worker.id)
  })
}
