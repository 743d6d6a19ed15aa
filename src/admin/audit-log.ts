import { parseJsonObject } from '../kernel/json.js'
import type { Logger } from '../kernel/logger.js'
import type { SharedState } from '../state/shared-state.js'

export interface AuditEntry {
  readonly at: string
  /** The admin token's name. */
  readonly by: string
  readonly action: string
  /** The route acted on; empty for an action on a consumer. */
  readonly route: string
  readonly instance?: string
  readonly consumer?: string
  readonly reason?: string
  readonly detail?: Record<string, unknown>
  /** The replica that took the action. */
  readonly replica: string
}

const KEY = 'portico:audit'
/** Entries kept (in Redis for the fleet, in memory without it). */
export const AUDIT_LENGTH = 200

/** Every operator action: one log line, and an entry in the fleet's audit list (newest first). */
export class AuditLog {
  readonly #state: SharedState | undefined
  readonly #logger: Logger
  readonly #local: AuditEntry[] = []

  constructor(options: { state: SharedState | undefined; logger: Logger }) {
    this.#state = options.state
    this.#logger = options.logger
  }

  async record(entry: AuditEntry): Promise<void> {
    this.#logger.info({ audit: entry }, `operator ${entry.by}: ${entry.action} ${entry.consumer ?? entry.route}${entry.instance ? `/${entry.instance}` : ''}${entry.reason ? ` (${entry.reason})` : ''}`)
    this.#local.unshift(entry)
    this.#local.length = Math.min(this.#local.length, AUDIT_LENGTH)
    await this.#state?.redis.multi().lpush(KEY, JSON.stringify(entry)).ltrim(KEY, 0, AUDIT_LENGTH - 1).exec()
  }

  /** The last `limit` actions, newest first: the fleet's when Redis answers, this replica's otherwise. */
  async list(limit = 100): Promise<AuditEntry[]> {
    if (!this.#state?.isUp()) return this.#local.slice(0, limit)
    const texts = await this.#state.redis.lrange(KEY, 0, limit - 1).catch(() => undefined)
    if (!texts) return this.#local.slice(0, limit)
    return texts.flatMap((text) => {
      const entry = parseJsonObject(text)
      return entry ? [entry as unknown as AuditEntry] : []
    })
  }
}
