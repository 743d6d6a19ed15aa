import type { ComponentHealth } from '../kernel/health.js'

export type HealthCheck = () => ComponentHealth

/** Components register here; readiness is the sum of what they say. */
export class HealthRegistry {
  readonly #checks = new Map<string, HealthCheck>()
  #shuttingDown = false

  register(name: string, check: HealthCheck): void {
    this.#checks.set(name, check)
  }

  shutdown(): void {
    this.#shuttingDown = true
  }

  /** Ready unless shutting down or a component is down; degraded components are reported but still serve. */
  report(): { ready: boolean; status: ComponentHealth['status']; components: Record<string, ComponentHealth> } {
    const components: Record<string, ComponentHealth> = {}
    for (const [name, check] of this.#checks) components[name] = check()
    const states = Object.values(components).map((c) => c.status)
    const status = this.#shuttingDown || states.includes('down') ? 'down' : states.includes('degraded') ? 'degraded' : 'ok'
    return { ready: status !== 'down', status, components: this.#shuttingDown ? { ...components, shutdown: { status: 'down', detail: 'draining' } } : components }
  }
}
