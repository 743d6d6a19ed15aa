import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { mkdtemp, rm, writeFile, unlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadConfig, type Flags } from '../../src/kernel/process-config.js'
import { createLogger, startPortico, type RunningPortico } from '../../src/server.js'
import { waitFor } from './poll.js'

export const ROOT = new URL('../..', import.meta.url).pathname

export interface TestGateway {
  readonly url: string
  readonly adminUrl: string
  readonly routesDir: string
  readonly portico: RunningPortico
  writeRoutes(file: string, yaml: string): Promise<void>
  removeRoutes(file: string): Promise<void>
  close(): Promise<void>
}

export async function makeRoutesDir(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'portico-routes-'))
  await Promise.all(Object.entries(files).map(([name, yaml]) => writeFile(join(dir, name), yaml)))
  return dir
}

/** A whole Portico (gateway and admin) in this process, on free ports, serving a temporary routes directory. */
export async function startGateway(files: Record<string, string>, flags: Flags = {}, env: Record<string, string | undefined> = {}): Promise<TestGateway> {
  const routesDir = await makeRoutesDir(files)
  // No shutdown delay unless a test asks for one: each close would wait it out.
  const config = loadConfig({ routes: routesDir, port: '0', 'admin-port': '0', host: '127.0.0.1', ...flags }, { PORTICO_SHUTDOWN_DELAY: '0s', PORTICO_ACCESS_LOG: 'off', ...env })
  const portico = await startPortico(config, createLogger(process.env.PORTICO_TEST_LOG ?? 'silent'))
  return {
    url: portico.url,
    adminUrl: portico.adminUrl,
    routesDir,
    portico,
    writeRoutes: (file, yaml) => writeFile(join(routesDir, file), yaml),
    removeRoutes: (file) => unlink(join(routesDir, file)),
    async close() {
      await portico.shutdown()
      await rm(routesDir, { recursive: true, force: true })
    },
  }
}

export interface GatewayProcess {
  readonly child: ChildProcessWithoutNullStreams
  readonly url: string
  readonly adminUrl: string
  output(): string
  exited: Promise<number | null>
  stop(signal?: NodeJS.Signals): Promise<number | null>
}

/** Runs the CLI as its own process: `node --import tsx src/cli.ts …`. */
export function runCli(args: string[], env: Record<string, string | undefined> = {}): ChildProcessWithoutNullStreams {
  return spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src/cli.ts'), ...args], {
    cwd: ROOT,
    env: { ...process.env, PORTICO_LOG_LEVEL: 'info', PORTICO_SHUTDOWN_DELAY: '0s', PORTICO_ACCESS_LOG: 'off', ...env },
  })
}

/** `portico start` in a child process; resolves once it logged the addresses it listens on. */
export async function spawnGateway(routesDir: string, env: Record<string, string | undefined> = {}, extraArgs: string[] = []): Promise<GatewayProcess> {
  const child = runCli(['start', '--routes', routesDir, '--port', '0', '--admin-port', '0', '--host', '127.0.0.1', ...extraArgs], env)
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()))
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()))
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  const serving = await waitFor(
    () => {
      if (child.exitCode !== null) throw new Error(`portico exited early:\n${output}`)
      const line = output.split('\n').find((l) => l.includes('"portico is serving"'))
      return line ? (JSON.parse(line) as { url: string; adminUrl: string }) : undefined
    },
    // Each process (and each worker of --workers) compiles the sources with tsx first: slow on a CI machine running two suites' files at once.
    { timeoutMs: 45_000, what: 'portico to listen' },
  ).catch((error: unknown) => {
    child.kill('SIGKILL')
    throw new Error(`${(error as Error).message}\n${output}`)
  })
  return {
    child,
    url: serving.url,
    adminUrl: serving.adminUrl,
    output: () => output,
    exited,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null) child.kill(signal)
      return exited
    },
  }
}
