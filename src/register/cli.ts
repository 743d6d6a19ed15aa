import { parseArgs } from 'node:util'
import { ConfigError } from '../kernel/process-config.js'
import { register } from './register.js'

/** `portico register`: registers a service not written in Node, runs until killed, deregisters on exit. */
export async function registerCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      name: { type: 'string' },
      port: { type: 'string' },
      address: { type: 'string' },
      id: { type: 'string' },
      health: { type: 'string' },
      'health-interval': { type: 'string' },
      tag: { type: 'string', multiple: true },
      meta: { type: 'string', multiple: true },
    },
  })
  if (!values.name) throw new ConfigError('register: --name is required')
  const port = Number(values.port)
  if (!values.port || !Number.isInteger(port) || port < 1 || port > 65535) throw new ConfigError(`register: --port "${values.port ?? ''}" is not a port number (1-65535)`)
  const meta: Record<string, string> = {}
  for (const pair of values.meta ?? []) {
    const at = pair.indexOf('=')
    if (at < 1) throw new ConfigError(`register: --meta "${pair}" is not key=value`)
    meta[pair.slice(0, at)] = pair.slice(at + 1)
  }
  // Listening before registering: Consul may show the instance passing before its answer reaches this process, and a
  // signal in between must still deregister it. Nothing else keeps this process up until a signal arrives.
  const stop = new AbortController()
  const stopRequested = new Promise<void>((resolve) => {
    const onSignal = () => {
      stop.abort()
      resolve()
    }
    process.once('SIGTERM', onSignal)
    process.once('SIGINT', onSignal)
  })
  const keepAlive = setInterval(() => undefined, 60_000)
  try {
    const registration = await register({
      name: values.name,
      port,
      address: values.address,
      id: values.id,
      tags: values.tag ?? [],
      meta,
      health: values.health ? { path: values.health, interval: values['health-interval'] ?? '10s' } : false,
      signal: stop.signal,
      log: (message) => console.log(message),
    }).catch((error: unknown) => {
      if (stop.signal.aborted) return undefined // stopped before Consul ever took the registration: nothing to undo
      throw error
    })
    if (!registration) return 0
    await stopRequested
    await registration.deregister()
    return 0
  } catch (error) {
    console.error(`portico register: ${(error as Error).message}`)
    return 1
  } finally {
    clearInterval(keepAlive)
  }
}
