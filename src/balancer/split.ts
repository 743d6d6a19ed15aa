import { rendezvous, totalWeight } from './balancer.js'

/** One side of a weighted split, as the split chooses among them. */
export interface SplitChoice {
  readonly name: string
  readonly weight: number
  /** Whether it can take a request now (it has an instance in rotation, and its breaker is not open). */
  available(): boolean
}

/**
 * A split's choice for one request, among the targets that can take it: by a hash of `key` (the same on every replica
 * and worker, moving only when the weights or the targets that can take requests change), or drawn at random by
 * weight without one. A target that cannot take requests gives its share to the others in proportion to theirs; a
 * weight of 0 takes nothing even then. When none with a weight can take it, the choice ignores availability: the
 * request meets its target's own answer (no instance, an open breaker), as it would without the split.
 */
export function chooseSplitTarget<T extends SplitChoice>(targets: readonly T[], key: string | undefined, random: () => number = Math.random): T {
  let candidates: readonly T[] = targets
  for (const target of targets)
    if (target.weight === 0 || !target.available()) {
      candidates = targets.filter((t) => t.weight > 0 && t.available())
      if (candidates.length === 0) candidates = targets.filter((t) => t.weight > 0)
      break
    }
  if (key !== undefined) return rendezvous(candidates, key, nameOf) as T
  let slot = random() * totalWeight(candidates)
  for (const target of candidates) {
    slot -= target.weight
    if (slot < 0) return target
  }
  return candidates[candidates.length - 1] as T
}

const nameOf = (target: SplitChoice): string => target.name
