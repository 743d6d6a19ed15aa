import type { Instance } from './instance.js'

export const LOAD_BALANCERS = ['round-robin', 'least-request', 'random', 'consistent-hash'] as const
export type LoadBalancerKind = (typeof LOAD_BALANCERS)[number]

export interface PickContext {
  /** Consistent-hash key (see request-key.ts); ignored by other balancers. */
  readonly hashKey?: string | undefined
  /** Instances already tried by this request; picked only when nothing else is left. */
  readonly exclude?: ReadonlySet<string> | undefined
}

export type Pick = (instances: readonly Instance[], context: PickContext) => Instance | undefined

/** Requests under way per instance origin, counted for least-request routes; shared, so each sees the load the others put on an instance. */
export class InFlight {
  readonly #counts = new Map<string, number>()
  get(origin: string): number {
    return this.#counts.get(origin) ?? 0
  }
  start(origin: string): () => void {
    this.#counts.set(origin, this.get(origin) + 1)
    let done = false
    return () => {
      if (done) return
      done = true
      const left = this.get(origin) - 1
      if (left <= 0) this.#counts.delete(origin)
      else this.#counts.set(origin, left)
    }
  }
}

export interface BalancerDeps {
  readonly inFlight: InFlight
  readonly random?: () => number
}

/** One balancer per route: its state (the round-robin position) lives as long as the route does. */
export function createBalancer(kind: LoadBalancerKind, deps: BalancerDeps): Pick {
  const random = deps.random ?? Math.random
  const eligible = (instances: readonly Instance[], exclude: ReadonlySet<string> | undefined): readonly Instance[] => {
    if (!exclude || exclude.size === 0) return instances
    const left = instances.filter((i) => !exclude.has(i.id))
    return left.length > 0 ? left : instances
  }

  switch (kind) {
    case 'round-robin': {
      let position = 0
      return function roundRobin(instances, { exclude }) {
        const candidates = eligible(instances, exclude)
        if (candidates.length === 0) return undefined
        return weightedAt(candidates, position++)
      }
    }
    case 'random':
      return function randomPick(instances, { exclude }) {
        const candidates = eligible(instances, exclude)
        if (candidates.length === 0) return undefined
        return weightedAt(candidates, Math.floor(random() * totalWeight(candidates)))
      }
    case 'least-request':
      return function leastRequest(instances, { exclude }) {
        const candidates = eligible(instances, exclude)
        if (candidates.length <= 1) return candidates[0]
        // Power of two choices: two distinct random instances, the less loaded (relative to weight) wins.
        const first = Math.floor(random() * candidates.length)
        const second = (first + 1 + Math.floor(random() * (candidates.length - 1))) % candidates.length
        const a = candidates[first] as Instance
        const b = candidates[second] as Instance
        return deps.inFlight.get(a.origin) / a.weight <= deps.inFlight.get(b.origin) / b.weight ? a : b
      }
    case 'consistent-hash':
      return function consistentHash(instances, { exclude, hashKey }) {
        const candidates = eligible(instances, exclude)
        return rendezvous(candidates, hashKey ?? '', (instance) => instance.id)
      }
  }
}

/**
 * Weighted rendezvous hashing: each key keeps its choice while that choice stays and the weights hold; when one goes,
 * only its keys move, and a weight change moves only as many keys as the shares changed by. Every replica and worker
 * computes the same choice from the same key and names.
 */
export function rendezvous<T extends { readonly weight: number }>(choices: readonly T[], key: string, idOf: (choice: T) => string): T | undefined {
  let best: T | undefined
  let bestScore = -Infinity
  for (const choice of choices) {
    const unit = (mix32(fnv1a(`${key}\u0000${idOf(choice)}`)) + 1) / 4_294_967_297
    const score = -choice.weight / Math.log(unit)
    if (score > bestScore) {
      best = choice
      bestScore = score
    }
  }
  return best
}

export function totalWeight(instances: readonly { readonly weight: number }[]): number {
  let total = 0
  for (const i of instances) total += i.weight
  return total
}

function weightedAt(instances: readonly Instance[], position: number): Instance {
  if (instances.every((i) => i.weight === instances[0]?.weight)) return instances[position % instances.length] as Instance
  let slot = position % totalWeight(instances)
  for (const instance of instances) {
    slot -= instance.weight
    if (slot < 0) return instance
  }
  return instances[instances.length - 1] as Instance
}

/**
 * murmur3's finaliser. FNV-1a alone leaves keys that differ in their last characters (instance ids such as `app-1`,
 * `app-2`) close together, which skewed the split to 50/25/25; mixed, every output bit depends on every input bit.
 */
function mix32(hash: number): number {
  let h = hash
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

function fnv1a(text: string): number {
  let hash = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193)
  }
  return hash >>> 0
}
