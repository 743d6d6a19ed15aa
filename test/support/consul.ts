import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { freePort } from './ports.js'
import { waitFor } from './poll.js'
import { kill } from './process.js'

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

/**
 * A `consul agent -dev` of our own, bound to 127.0.0.1 on free ports; resolves once it has a leader.
 * A port found free can be taken before the agent binds it (other tests start servers too): then try new ports.
 */
export async function startConsul(binary: string = consulBinary()): Promise<TestConsul> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startConsulOnFreePorts(binary)
    } catch (error) {
      if (attempt === 3 || !String((error as Error).cause ?? error).includes('address already in use')) throw error
    }
  }
}

async function startConsulOnFreePorts(binary: string): Promise<TestConsul> {
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
  try {
    await start()
  } catch (error) {
    await kill(child)
    throw error
  }
  return {
    address,
    start,
    stop: () => kill(child),
  }
}

export interface TtlInstance {
  readonly id: string
  pass(): Promise<void>
  fail(): Promise<void>
  deregister(): Promise<void>
}

async function consulPut(address: string, path: string, body?: unknown): Promise<void> {
  const response = await fetch(`${address}${path}`, { method: 'PUT', ...(body === undefined ? {} : { body: JSON.stringify(body) }) })
  if (!response.ok) throw new Error(`PUT ${path}: ${response.status} ${await response.text()}`)
}

/** Registers an instance straight through Consul's HTTP API with a TTL check the test flips by hand. */
export async function registerTtlInstance(
  address: string,
  service: { name: string; id: string; port: number; address?: string; weight?: number; tags?: string[]; meta?: Record<string, string> },
): Promise<TtlInstance> {
  await consulPut(address, '/v1/agent/service/register', {
    Name: service.name,
    ID: service.id,
    Address: service.address ?? '127.0.0.1',
    Port: service.port,
    Tags: service.tags ?? [],
    Meta: service.meta ?? {},
    ...(service.weight ? { Weights: { Passing: service.weight, Warning: 1 } } : {}),
    Check: { CheckID: `ttl-${service.id}`, TTL: '10m' },
  })
  const instance: TtlInstance = {
    id: service.id,
    pass: () => consulPut(address, `/v1/agent/check/pass/ttl-${service.id}`),
    fail: () => consulPut(address, `/v1/agent/check/fail/ttl-${service.id}`),
    deregister: () => consulPut(address, `/v1/agent/service/deregister/${service.id}`),
  }
  await instance.pass()
  return instance
}

/** Passing instances of a service, as Consul reports them. */
export async function passingIds(address: string, service: string): Promise<string[]> {
  const response = await fetch(`${address}/v1/health/service/${service}?passing=true`)
  const entries = (await response.json()) as { Service: { ID: string } }[]
  return entries.map((e) => e.Service.ID).sort()
}
