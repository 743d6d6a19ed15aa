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
  const registration = await register({
    name: values.name,
    port,
    address: values.address,
    id: values.id,
    tags: values.tag ?? [],
    meta,
    health: values.health ? { path: values.health, interval: values['health-interval'] ?? '10s' } : false,
    log: (message) => console.log(message),
  })
  // The registration holds no socket open, so nothing else keeps this process up until a signal arrives.
  const keepAlive = setInterval(() => undefined, 60_000)
  const done = new Promise<number>((resolve) => {
    const stop = () => {
      clearInterval(keepAlive)
      registration.deregister().then(
        () => resolve(0),
        (error: unknown) => {
          console.error(`portico register: deregistering failed: ${(error as Error).message}`)
          resolve(1)
        },
      )
    }
    process.once('SIGTERM', stop)
    process.once('SIGINT', stop)
  })
  return done
}
