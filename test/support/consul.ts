import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { freePort } from './ports.js'
import { waitFor } from './poll.js'

const ROOT = new URL('../..', import.meta.url).pathname

export interface TestConsul {
  /** `http://127.0.0.1:port` of the agent's HTTP API. */
  readonly address: string
  stop(): Promise<void>
  /** Starts the agent again on the same ports (a dev agent starts empty). */
  start(): Promise<void>
}

/** The agent binary: CONSUL_BIN, a consul on PATH, or one built by scripts/install-consul.sh (built on first use). */
export function consulBinary(): string {
  const output = execFileSync('bash', [join(ROOT, 'scripts/install-consul.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] })
  const path = output.trim().split('\n').at(-1)
  if (!path) throw new Error('scripts/install-consul.sh printed no binary path')
  return path
}

/** A `consul agent -dev` of our own, bound to 127.0.0.1 on free ports; resolves once it has a leader. */
export async function startConsul(binary: string = consulBinary()): Promise<TestConsul> {
  const [http, serfLan, serfWan, server] = [await freePort(), await freePort(), await freePort(), await freePort()]
  const address = `http://127.0.0.1:${http}`
  let child: ChildProcess | undefined
  let output = ''
  const start = async () => {
    child = spawn(
      binary,
      [
        'agent', '-dev', '-bind=127.0.0.1', '-client=127.0.0.1', '-log-level=warn',
        `-http-port=${http}`, '-dns-port=-1', '-grpc-port=-1', '-grpc-tls-port=-1',
        `-serf-lan-port=${serfLan}`, `-serf-wan-port=${serfWan}`, `-server-port=${server}`,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    child.stdout?.on('data', (d: Buffer) => (output += d.toString()))
    child.stderr?.on('data', (d: Buffer) => (output += d.toString()))
    await waitFor(
      async () => {
        if (child?.exitCode !== null) throw new Error(`consul exited: ${output}`)
        const response = await fetch(`${address}/v1/status/leader`)
        return response.ok && (await response.json()) !== ''
      },
      { timeoutMs: 30_000, intervalMs: 100, what: `consul leader on ${address}` },
    )
  }
  await start()
  return {
    address,
    start,
    async stop() {
      const running = child
      if (!running || running.exitCode !== null) return
      const exited = new Promise((resolve) => running.once('exit', resolve))
      running.kill('SIGKILL')
      await exited
    },
  }
}
