import type { Instance } from '../balancer/instance.js'
import type { HealthEntry } from './consul-client.js'

/**
 * Consul health entries to balancer instances. Pure, so it is table-tested.
 * The service's address wins over its node's (a service may run in a container with its own address); Consul's
 * passing weight becomes the balancing weight; tags and meta travel along for zone- or version-aware balancing.
 */
export function toInstances(entries: readonly HealthEntry[]): Instance[] {
  return entries
    .map((entry) => {
      const host = entry.Service.Address || entry.Node.Address
      const origin = `http://${host.includes(':') ? `[${host}]` : host}:${entry.Service.Port}`
      return {
        id: `${entry.Node.Node}/${entry.Service.ID}`,
        origin,
        weight: Math.max(1, Math.floor(entry.Service.Weights?.Passing ?? 1)),
        tags: Object.freeze([...(entry.Service.Tags ?? [])]),
        meta: Object.freeze({ ...entry.Service.Meta }),
      }
    })
    .sort((a, b) => a.id.localeCompare(b.id))
}

/**
 * The index to send with the next blocking query. Consul's rules: an index that went backwards (a snapshot restore,
 * a new cluster) means start over from 0; an index below 1 is treated as 1 so the query still blocks.
 */
export function nextIndex(previous: number, received: number): number {
  if (received < previous) return 0
  return Math.max(1, received)
}
