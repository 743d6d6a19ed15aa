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

/** A redis-server of our own on a free port, never the machine's. */
export async function startRedis(): Promise<TestRedis> {
  const port = await freePort()
  let child: ChildProcess | undefined
  const start = async () => {
    child = spawn(process.env.REDIS_SERVER_BIN ?? 'redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
      stdio: 'ignore',
    })
    await waitFor(() => ping(port), { timeoutMs: 10_000, what: `redis-server on ${port}` })
  }
  await start()
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    start,
    stop: () => kill(child),
    pause: () => void child?.kill('SIGSTOP'),
    resume: () => void child?.kill('SIGCONT'),
  }
}
