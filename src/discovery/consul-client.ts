import Consul from 'consul'
import { EventEmitter } from 'node:events'
import { readFileSync } from 'node:fs'
import { Agent as HttpsAgent } from 'node:https'
import type { ConsulConnection } from '../kernel/process-config.js'

/** One entry of `/v1/health/service/<name>`, reduced to what we read. */
export interface HealthEntry {
  readonly Node: { readonly Node: string; readonly Address: string }
  readonly Service: {
    readonly ID: string
    readonly Service: string
    readonly Address: string
    readonly Port: number
    readonly Tags: readonly string[] | null
    readonly Meta: Readonly<Record<string, string>> | null
    readonly Weights?: { readonly Passing: number; readonly Warning: number } | null
  }
}

export interface BlockingResult<T> {
  /** X-Consul-Index of the answer: pass it back to block until something changes. */
  readonly index: number
  readonly value: T
}

export interface BlockingOptions {
  readonly index: number
  /** How long Consul may hold the request open, in seconds. */
  readonly waitSeconds: number
  readonly signal: AbortSignal
}

export interface ServiceRegistration {
  readonly id: string
  readonly name: string
  readonly address?: string | undefined
  readonly port: number
  readonly tags?: readonly string[] | undefined
  readonly meta?: Readonly<Record<string, string>> | undefined
  readonly check?:
    | {
        readonly http: string
        readonly interval: string
        readonly timeout: string
        readonly deregisterCriticalServiceAfter: string
        /** The check's first status; Consul starts a check critical unless told otherwise. */
        readonly status?: 'passing' | undefined
      }
    | undefined
}

/**
 * Our adapter over the `consul` npm client. The client reads no CONSUL_HTTP_* variables and its watch ends silently
 * on an HTTP 400, so we build it from our ConsulConnection and run blocking queries ourselves (see service-watch.ts).
 */
export interface ConsulClient {
  readonly address: string
  healthyInstances(service: string, options: BlockingOptions): Promise<BlockingResult<HealthEntry[]>>
  /** The meta of every registered instance of a service, passing or not (`/v1/catalog/service/<name>`). */
  serviceMeta(service: string): Promise<Readonly<Record<string, string>>[]>
  /** `/v1/catalog/services`: every service name with its tags. */
  services(options: BlockingOptions): Promise<BlockingResult<Record<string, string[]>>>
  register(registration: ServiceRegistration): Promise<void>
  deregister(id: string): Promise<void>
  /** Whether the local agent knows this service id (it forgets everything when restarted in dev mode). */
  hasService(id: string): Promise<boolean>
}

interface RawResponse {
  readonly headers: Record<string, string | undefined>
  readonly statusCode: number
}

export function createConsulClient(connection: ConsulConnection): ConsulClient {
  const url = new URL(connection.address)
  const consul = new Consul({
    host: url.hostname,
    port: Number(url.port || (connection.secure ? 443 : 80)),
    secure: connection.secure,
    ...(connection.caFile ? { agent: new HttpsAgent({ ca: readFileSync(connection.caFile), keepAlive: true }) } : {}),
    ...(connection.token ? { defaults: { token: connection.token } } : {}),
  })

  /** The client resolves bodies only; asking for the response too gives us X-Consul-Index. */
  const blocking = async <T>(call: (options: object) => Promise<unknown>, { index, waitSeconds, signal }: BlockingOptions): Promise<BlockingResult<T>> => {
    signal.throwIfAborted()
    const ctx = Object.assign(new EventEmitter(), { includeResponse: true })
    const cancel = () => ctx.emit('cancel')
    signal.addEventListener('abort', cancel, { once: true })
    try {
      const [response, value] = (await call({ index, wait: `${waitSeconds}s`, timeout: (waitSeconds + 5) * 1000, ctx })) as [RawResponse, T]
      const header = Number(response.headers['x-consul-index'])
      return { index: Number.isFinite(header) ? header : 0, value }
    } finally {
      signal.removeEventListener('abort', cancel)
    }
  }

  return {
    address: connection.address,
    healthyInstances: (service, options) =>
      blocking<HealthEntry[]>((o) => consul.health.service({ service, passing: true, ...o }), options),
    async serviceMeta(service) {
      const nodes = (await consul.catalog.service.nodes({ service })) as { ServiceMeta: Record<string, string> | null }[]
      return nodes.map((n) => n.ServiceMeta ?? {})
    },
    services: (options) => blocking<Record<string, string[]>>((o) => consul.catalog.service.list(o), options),
    async register(registration) {
      await consul.agent.service.register({
        id: registration.id,
        name: registration.name,
        port: registration.port,
        ...(registration.address ? { address: registration.address } : {}),
        tags: [...(registration.tags ?? [])],
        meta: { ...registration.meta },
        ...(registration.check
          ? {
              check: {
                name: `${registration.name} HTTP health`,
                http: registration.check.http,
                interval: registration.check.interval,
                timeout: registration.check.timeout,
                deregistercriticalserviceafter: registration.check.deregisterCriticalServiceAfter,
                ...(registration.check.status ? { status: registration.check.status } : {}),
              },
            }
          : {}),
      })
    },
    async deregister(id) {
      await consul.agent.service.deregister({ id })
    },
    async hasService(id) {
      const services = (await consul.agent.service.list()) as Record<string, unknown>
      return Object.hasOwn(services, id)
    },
  }
}
