#!/usr/bin/env node
import { createHash, randomBytes } from 'node:crypto'
import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { ConfigError, loadConfig } from './kernel/process-config.js'
import { mergeRouteSources } from './config/merge-sources.js'
import { formatRouteFileError } from './config/parse-route-file.js'
import { readRouteDir } from './config/providers/route-dir.js'
import { CertificateStore, type CertificateSource } from './tls/certificate-store.js'
import { createLogger, handleSignals, startPortico } from './server.js'
import { runPrimary, workerCount } from './workers/primary.js'
import { workerId } from './workers/worker.js'

const USAGE = `Usage:
  portico start [--routes DIR] [--port N] [--admin-port N] [--host H] [--admin-host H]
                [--trust-proxy true|N|CIDRs] [--max-body SIZE]
                [--shutdown-delay DURATION] [--drain-timeout DURATION] [--log-level LEVEL]
                [--access-log stdout|stderr|off|FILE] [--workers N|auto]
                [--tls-cert FILE --tls-key FILE | --tls-dir DIR] [--http2 true|false]
                [--redirect-port N] [--http2-stall-timeout DURATION]
  portico validate [DIR] [--tls-dir DIR | --tls-cert FILE --tls-key FILE]
  portico key new --consumer NAME
  portico register --name NAME --port N [--health PATH] [--address A] [--tag T]... [--meta k=v]...

Environment: PORTICO_PORT (8080), PORTICO_ADMIN_PORT (9901), PORTICO_ROUTES (./routes), PORTICO_ADMIN_TOKEN,
PORTICO_TLS_CERT, PORTICO_TLS_KEY, PORTICO_TLS_DIR, PORTICO_HTTP2, PORTICO_REDIRECT_PORT, REDIS_URL, CONSUL_HTTP_ADDR,
CONSUL_HTTP_TOKEN. Flags win over environment variables.`

const START_FLAGS = {
  routes: { type: 'string' },
  port: { type: 'string' },
  'admin-port': { type: 'string' },
  host: { type: 'string' },
  'admin-host': { type: 'string' },
  'trust-proxy': { type: 'string' },
  'max-body': { type: 'string' },
  'drain-timeout': { type: 'string' },
  'shutdown-delay': { type: 'string' },
  'log-level': { type: 'string' },
  'access-log': { type: 'string' },
  'consul-routes': { type: 'boolean' },
  workers: { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'tls-dir': { type: 'string' },
  http2: { type: 'string' },
  'redirect-port': { type: 'string' },
  'http2-stall-timeout': { type: 'string' },
} as const

const TLS_FLAGS = { 'tls-cert': START_FLAGS['tls-cert'], 'tls-key': START_FLAGS['tls-key'], 'tls-dir': START_FLAGS['tls-dir'] } as const

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv
  switch (command) {
    case 'start':
      return start(rest)
    case 'validate':
      return validate(rest)
    case 'register':
      return (await import('./register/cli.js')).registerCommand(rest)
    case 'key':
      return key(rest)
    case undefined:
    case '--help':
    case '-h':
    case 'help':
      console.log(USAGE)
      return command === undefined ? 2 : 0
    default:
      console.error(`portico: unknown command "${command}"\n\n${USAGE}`)
      return 2
  }
}

async function start(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: START_FLAGS, strict: true, allowPositionals: false })
  const config = loadConfig(values)
  const logger = createLogger(config.logLevel)
  if (workerId() === undefined && workerCount(config.workers) > 1) return runPrimary(config, logger)
  const portico = await startPortico(config, logger)
  handleSignals(portico, logger)
  return new Promise<number>(() => undefined) // runs until a signal ends it
}

/** Checks a routes directory as the gateway would load it (and certificates, given), every problem as file:line: message. */
async function validate(args: string[]): Promise<number> {
  const { positionals, values } = parseArgs({ args, options: TLS_FLAGS, strict: true, allowPositionals: true })
  if (positionals.length > 1) throw new ConfigError('validate takes at most one directory')
  const tls = loadConfig(values, {}).tls
  if (tls !== undefined && positionals.length === 0 && process.env.PORTICO_ROUTES === undefined) return validateCertificates(tls.source)
  const routes = await validateRoutes(resolve(positionals[0] ?? process.env.PORTICO_ROUTES ?? './routes'))
  return tls === undefined ? routes : Math.max(routes, await validateCertificates(tls.source))
}

async function validateRoutes(dir: string): Promise<number> {
  const sources = await readRouteDir(dir).catch(() => {
    throw new ConfigError(`routes directory ${dir} does not exist`)
  })
  const merged = mergeRouteSources(sources, new Map())
  const errors = merged.sources.flatMap((s) => s.errors)
  for (const error of errors) console.error(formatRouteFileError(error))
  if (errors.length > 0) {
    console.error(`${errors.length} problem${errors.length === 1 ? '' : 's'} in ${merged.sources.filter((s) => s.errors.length > 0).length} of ${sources.length} files`)
    return 1
  }
  console.log(`ok: ${merged.routes.length} routes${merged.consumers.length > 0 ? ` and ${merged.consumers.length} consumers` : ''} in ${sources.length} files`)
  return 0
}

/** Reads certificates as the TLS listener would: each served one with its names and expiry, each refused one with why. */
async function validateCertificates(source: CertificateSource): Promise<number> {
  const store = new CertificateStore(source, createLogger('silent'))
  await store.load()
  for (const certificate of store.served()) console.log(`ok: ${certificate.name}: ${certificate.names.join(', ')} (expires ${certificate.notAfter.toISOString()})`)
  for (const message of store.refused().values()) console.error(message)
  if (store.refused().size > 0 || store.served().length === 0) {
    if (store.served().length === 0 && store.refused().size === 0) console.error(`no certificate found${'dir' in source ? ` in ${source.dir} (NAME.crt + NAME.key)` : ''}`)
    return 1
  }
  return 0
}

/** A fresh API key, printed once, with the line of its consumers file: the gateway only ever holds the hash. */
function key(args: string[]): number {
  const { values, positionals } = parseArgs({ args, options: { consumer: { type: 'string' } }, strict: true, allowPositionals: true })
  if (positionals[0] !== 'new' || positionals.length > 1) throw new ConfigError('usage: portico key new --consumer NAME')
  const consumer = values.consumer ?? 'NAME'
  const apiKey = `pk_${randomBytes(32).toString('base64url')}`
  const hash = createHash('sha256').update(apiKey).digest('hex')
  console.log(`key (shown once; give it to ${consumer}): ${apiKey}`)
  console.log(`for the consumers file:\n  - name: ${consumer}\n    apiKeys: [sha256:${hash}]`)
  return 0
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    const known = error instanceof ConfigError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')
    console.error(`portico: ${(error as Error).message}${known ? `\n\n${USAGE}` : ''}`)
    process.exit(known ? 2 : 1)
  },
)
