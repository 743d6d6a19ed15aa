/** What one part of the gateway says about itself on /readyz and the admin API. */
export interface ComponentHealth {
  /** ok: working; degraded: serving on a fallback (e.g. last known instances); down: not serving. */
  readonly status: 'ok' | 'degraded' | 'down'
  readonly detail?: string
  readonly [key: string]: unknown
}
