import { spawn, type ChildProcess } from 'node:child_process'
import { createConnection } from 'node:net'
import { freePort } from './ports.js'
import { waitFor } from './poll.js'
import { kill } from './process.js'

export interface TestRedis {
  readonly url: string
  readonly port: number
  /** Kills the server (a fault test); `start()` brings it back on the same port, empty. */
  stop(): Promise<void>
  start(): Promise<void>
  /** Freezes the server (SIGSTOP), as a long fork or a network black hole would: connections stay open, nothing answers. */
  pause(): void
  resume(): void
}

function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port }, () => socket.write('PING\r\n'))
    socket.once('data', (data) => {
      socket.destroy()
      resolve(data.toString().startsWith('+PONG'))
    })
    socket.once('error', () => resolve(false))
  })
}

/**
 * A redis-server of our own on a free port, never the machine's. A port free a moment ago can be taken before the
 * server binds it (an outgoing connection's ephemeral port, another test's server): a server that exits before it
 * answers is started again on another port.
 */
export async function startRedis(): Promise<TestRedis> {
  let port = 0
  let child: ChildProcess | undefined
  const start = async () => {
    const started = spawn(process.env.REDIS_SERVER_BIN ?? 'redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
      stdio: 'ignore',
    })
    child = started
    const exited = new Promise<never>((_resolve, reject) => started.once('exit', (code) => reject(new Error(`redis-server on ${port} exited (${code}) before it answered`))))
    exited.catch(() => undefined) // a server stopped later by its test rejects nobody
    await Promise.race([waitFor(() => ping(port), { timeoutMs: 10_000, what: `redis-server on ${port}` }), exited])
  }
  for (let attempt = 1; ; attempt++) {
    port = await freePort()
    try {
      await start()
      break
    } catch (error) {
      await kill(child)
      if (attempt === 3) throw error
    }
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    start,
    stop: () => kill(child),
    pause: () => void child?.kill('SIGSTOP'),
    resume: () => void child?.kill('SIGCONT'),
  }
}
