import type { Instance } from '../balancer/instance.js'
import type { DecidedTable } from '../config/route-watcher.js'
import type { ComponentHealth } from '../kernel/health.js'

/** What a worker tells the primary once it serves: its traffic URL, and where its own admin server answers. */
export interface ReadyMessage {
  readonly portico: 'ready'
  readonly url: string
  readonly adminUrl: string
}

/** A worker's route table names these Consul services. */
export interface FollowMessage {
  readonly portico: 'follow'
  readonly services: readonly string[]
}

/** A worker that listens asks for the route table its primary decided. */
export interface TableRequest {
  readonly portico: 'table?'
}

/** The primary asks a worker to stop taking connections, finish what it has, and exit (a rolling restart). */
export interface RetireMessage {
  readonly portico: 'retire'
}

/** What the primary's Consul watches know: the instances of every service a worker follows, and their health. */
export interface DiscoveryMessage {
  readonly portico: 'discovery'
  readonly instances: Readonly<Record<string, readonly Instance[]>>
  readonly health: ComponentHealth
}

/** The route table the primary decided, for its workers. */
export interface TableMessage {
  readonly portico: 'table'
  readonly table: DecidedTable
}

export type WorkerMessage = ReadyMessage | FollowMessage | TableRequest
export type PrimaryMessage = RetireMessage | DiscoveryMessage | TableMessage

export const RETIRE: RetireMessage = { portico: 'retire' }
export const TABLE_PLEASE: TableRequest = { portico: 'table?' }

const isRecord = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null

/**
 * What a worker sent its primary, or undefined for anything else on the channel (prom-client's and the host
 * channel's messages share it). The one place a worker's messages are read.
 */
export function parseWorkerMessage(value: unknown): WorkerMessage | undefined {
  if (!isRecord(value)) return undefined
  switch (value.portico) {
    case 'ready':
      return typeof value.url === 'string' && typeof value.adminUrl === 'string' ? { portico: 'ready', url: value.url, adminUrl: value.adminUrl } : undefined
    case 'follow':
      return Array.isArray(value.services) && value.services.every((s) => typeof s === 'string') ? { portico: 'follow', services: value.services as string[] } : undefined
    case 'table?':
      return TABLE_PLEASE
    default:
      return undefined
  }
}

/** What the primary sent a worker, or undefined for anything else on the channel. The one place they are read. */
export function parsePrimaryMessage(value: unknown): PrimaryMessage | undefined {
  if (!isRecord(value)) return undefined
  switch (value.portico) {
    case 'retire':
      return RETIRE
    // Structured clone from the primary, which made them from its own state: their shape is the primary's.
    case 'discovery':
      return isRecord(value.instances) && isRecord(value.health) ? (value as unknown as DiscoveryMessage) : undefined
    case 'table':
      return isRecord(value.table) ? (value as unknown as TableMessage) : undefined
    default:
      return undefined
  }
}
