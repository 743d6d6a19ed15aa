import { readFileSync } from 'node:fs'
import { createServer } from 'node:net'

/** The kernel setting that hands a closing listener's queued connections to another listener of its port (Linux 5.14+). */
const MIGRATE_SETTING = '/proc/sys/net/ipv4/tcp_migrate_req'

/**
 * How the workers of `--workers` share the traffic port, decided once by the primary. Each worker listening itself
 * (SO_REUSEPORT) spares every connection the primary's hand-off, and a dead worker's socket is gone with it, where
 * node:cluster's primary may hand a new connection to a worker that has just died (that connection hangs). But a
 * listener that closes — a worker killed, or retiring on SIGUSR2 — resets the connections the kernel queued on it,
 * unless net.ipv4.tcp_migrate_req moves them to another worker: so only with that setting, on Linux and a Node with
 * reusePort (22.12+, 23.1+).
 */
export function workersListening(): { readonly themselves: boolean; readonly why: string } {
  if (process.platform !== 'linux') return { themselves: false, why: 'node:cluster hands out connections (SO_REUSEPORT spreads them on Linux only)' }
  if (!reusePortIn(process.versions.node)) return { themselves: false, why: 'node:cluster hands out connections (each worker listens itself from Node 22.12 on)' }
  let migrate: string | undefined
  try {
    migrate = readFileSync(MIGRATE_SETTING, 'utf8').trim()
  } catch {
    migrate = undefined
  }
  if (migrate !== '1') return { themselves: false, why: 'node:cluster hands out connections (with net.ipv4.tcp_migrate_req=1 each worker listens itself, SO_REUSEPORT)' }
  return { themselves: true, why: 'each worker listens on the traffic port itself (SO_REUSEPORT; net.ipv4.tcp_migrate_req=1)' }
}

/**
 * Set by the primary on the workers it forks when they listen themselves: the traffic port to bind, the one asked for
 * or, for port 0, the one the first worker got (0 for that first one).
 */
export const WORKER_PORT_VARIABLE = 'PORTICO_WORKER_PORT'

function reusePortIn(version: string): boolean {
  const [major = 0, minor = 0] = version.split('.').map(Number)
  return major > 23 || (major === 23 && minor >= 1) || (major === 22 && minor >= 12)
}

/** How long the primary waits for a held traffic port: workers orphaned by an earlier primary listen for 1 s more. */
const PORT_WAIT_MS = 5_000

/**
 * Refuses a traffic port something else holds. Sockets with SO_REUSEPORT of one user share a port without an error, so
 * a second `--workers` gateway started on the same port by mistake would take half the first one's connections: a
 * plain bind, before any worker binds, fails instead.
 */
export async function assertPortFree(host: string, port: number): Promise<void> {
  if (port === 0) return
  for (const deadline = Date.now() + PORT_WAIT_MS; ; await new Promise((resolve) => setTimeout(resolve, 100))) {
    const error = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
      const probe = createServer()
      probe.once('error', resolve)
      probe.listen({ host, port, exclusive: true }, () => probe.close(() => resolve(undefined)))
    })
    if (error === undefined) return
    if (error.code !== 'EADDRINUSE') throw error
    if (Date.now() > deadline) throw new Error(`port ${port} on ${host} is already in use`, { cause: error })
  }
}
