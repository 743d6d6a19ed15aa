import { hostname } from 'node:os'
import { consulConnection, type ConsulConnection } from '../kernel/process-config.js'
import { backoffDelay, pause } from '../kernel/backoff.js'
import { createConsulClient, type ConsulClient, type ServiceRegistration } from '../discovery/consul-client.js'

export interface HealthCheckOptions {
  /** Path Consul polls over HTTP, e.g. `/health`. */
  readonly path: string
  /** Default `10s`. */
  readonly interval?: string
  /** Default `2s`. */
  readonly timeout?: string
  /** Consul removes the service after it has been critical this long. Default `1m`. */
  readonly deregisterAfter?: string
}

export interface RegisterOptions {
  readonly name: string
  readonly port: number
  /** Address the gateway (and Consul's check) reach the service at. Default: SERVICE_ADDRESS, else 127.0.0.1. */
  readonly address?: string
  /** Default: `<name>-<hostname>-<port>`, stable across restarts of the same instance. */
  readonly id?: string
  readonly tags?: readonly string[]
  readonly meta?: Readonly<Record<string, string>>
  /** The HTTP check; `false` registers without one (the instance then always counts as passing). */
  readonly health: HealthCheckOptions | false
  /** Deregister and let the process exit on SIGTERM/SIGINT. Default false: call `deregister()` yourself. */
  readonly deregisterOnSignals?: boolean
  /** How often to check that the agent still knows the service, and re-register if it forgot (agent restart). Default 5 s. */
  readonly resyncIntervalMs?: number
  /** Default: from CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, CONSUL_HTTP_SSL, CONSUL_CACERT. */
  readonly consul?: ConsulConnection | ConsulClient
  /** Stops retrying the first registration. */
  readonly signal?: AbortSignal
  readonly log?: (message: string) => void
}

export interface Registration {
  readonly id: string
  /** Removes the service from Consul and stops the resync loop; safe to call twice. */
  deregister(): Promise<void>
}

/**
 * Registers this process as an instance of `name` with the local Consul agent. Retries with backoff until Consul
 * answers, then keeps the registration alive across agent restarts until `deregister()`.
 */
export async function register(options: RegisterOptions): Promise<Registration> {
  const client = isClient(options.consul) ? options.consul : createConsulClient(options.consul ?? consulConnection(process.env))
  const address = options.address ?? process.env.SERVICE_ADDRESS ?? '127.0.0.1'
  const id = options.id ?? `${options.name}-${hostname()}-${options.port}`
  const log = options.log ?? (() => undefined)
  const registration: ServiceRegistration = {
    id,
    name: options.name,
    address,
    port: options.port,
    tags: options.tags,
    meta: options.meta,
    check: options.health
      ? {
          http: `http://${address.includes(':') ? `[${address}]` : address}:${options.port}${options.health.path}`,
          interval: options.health.interval ?? '10s',
          timeout: options.health.timeout ?? '2s',
          deregisterCriticalServiceAfter: options.health.deregisterAfter ?? '1m',
        }
      : undefined,
  }

  // A check Consul has never run starts critical: the instance gets no traffic for up to an interval, and after an
  // agent restart every instance at once. When the service answers its own check now, it starts passing instead.
  const registerNow = async () => client.register({ ...registration, check: registration.check && { ...registration.check, status: (await answersCheck(registration.check.http)) ? 'passing' : undefined } })

  const stopped = new AbortController()
  const giveUp = AbortSignal.any([stopped.signal, ...(options.signal ? [options.signal] : [])])
  let lastAttempt: Promise<unknown> = Promise.resolve()
  let deregistering: Promise<void> | undefined
  const deregister = () =>
    (deregistering ??= (async () => {
      stopped.abort()
      process.off('SIGTERM', onSignal)
      process.off('SIGINT', onSignal)
      // A registration still on its way may land after the deregistration: wait for it first.
      await lastAttempt.catch(() => undefined)
      await client.deregister(id)
      log(`deregistered ${id}`)
    })())

  function onSignal(signal: NodeJS.Signals) {
    void deregister()
      .catch((error: unknown) => log(`deregistering ${id} failed: ${(error as Error).message}`))
      .finally(() => {
        // Leave the exit to other handlers if there are any; otherwise end as the signal would have.
        if (process.listenerCount(signal) === 0) process.kill(process.pid, signal)
      })
  }
  // Listening before the first registration: Consul may show the instance passing before its answer reaches this
  // process, and a signal in between must still deregister it.
  if (options.deregisterOnSignals) {
    process.once('SIGTERM', onSignal)
    process.once('SIGINT', onSignal)
  }

  const aborted = (cause: unknown) => new Error(`registering ${id} with Consul at ${client.address} was aborted`, { cause })
  for (let attempt = 0; ; attempt++) {
    try {
      await (lastAttempt = registerNow())
      break
    } catch (error) {
      if (giveUp.aborted) throw aborted(error)
      log(`consul at ${client.address} not reachable yet (${(error as Error).message}); retrying`)
      await pause(backoffDelay(attempt, { baseMs: 200, capMs: 5_000 }), giveUp)
      if (giveUp.aborted) throw aborted(error)
    }
  }
  log(`registered ${id} with consul at ${client.address}`)
  if (stopped.signal.aborted) return { id, deregister }

  const resync = setInterval(() => {
    client.hasService(id).then(
      (known) => (known || stopped.signal.aborted ? undefined : registerNow().then(() => log(`re-registered ${id} after the agent forgot it`))),
      () => undefined, // agent down: the next tick tries again
    ).catch(() => undefined)
  }, options.resyncIntervalMs ?? 5_000)
  resync.unref()
  stopped.signal.addEventListener('abort', () => clearInterval(resync), { once: true })

  return { id, deregister }
}

/** Whether the service answers its health check with a 2xx now (as Consul's HTTP check counts it). */
async function answersCheck(url: string): Promise<boolean> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(2_000) })
    await response.body?.cancel()
    return response.ok
  } catch {
    return false
  }
}

function isClient(value: RegisterOptions['consul']): value is ConsulClient {
  return typeof value === 'object' && 'healthyInstances' in value
}
