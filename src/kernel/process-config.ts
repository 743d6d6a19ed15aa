import { resolve } from 'node:path'
import { parseDuration, parseSize } from './duration.js'

/** Everything the gateway process is configured with: flags win over env vars, env vars over defaults. */
export interface PorticoConfig {
  readonly host: string
  readonly port: number
  readonly adminHost: string
  readonly adminPort: number
  readonly routesDir: string
  readonly adminToken: string | undefined
  /** A file of `name:token` lines: several named admin tokens (the audit says which one acted). */
  readonly adminTokensFile: string | undefined
  /** /metrics answers without a token even when tokens are set. */
  readonly metricsPublic: boolean
  readonly trustProxy: boolean | number | string
  readonly maxBodyBytes: number
  readonly drainTimeoutMs: number
  /** After SIGTERM, how long readiness fails while traffic is still served, before the listener closes. */
  readonly shutdownDelayMs: number
  readonly logLevel: string
  /** One line per request: `stdout`, `stderr`, `off` or a file path. */
  readonly accessLog: string
  readonly redisUrl: string | undefined
  /** Consul is used when a route names a `service:`; these say how to reach it. */
  readonly consul: ConsulConnection
  /** Opt-in: services may publish their own routes through Consul service meta (`portico-prefix`). */
  readonly consulRoutes: boolean
  /** Processes serving traffic on the port: 1 (this process), a number of workers, or `auto` (one per usable CPU). */
  readonly workers: number | 'auto'
  /** HTTPS on the traffic port, when certificates are given. */
  readonly tls: TlsConfig | undefined
  /** A plain HTTP port that sends clients to the HTTPS URL (308). */
  readonly redirectPort: number | undefined
}

export interface TlsConfig {
  /** One pair (`--tls-cert`, `--tls-key`), or a directory of NAME.crt + NAME.key pairs picked by SNI. */
  readonly source: { readonly certFile: string; readonly keyFile: string } | { readonly dir: string }
  /** ALPN h2 and http/1.1 on the one port (default); false: HTTP/1.1 only. */
  readonly http2: boolean
  /** An HTTP/2 stream whose client takes no byte of its answer for this long is cut (a window held at zero). */
  readonly http2StallMs: number
}

export interface ConsulConnection {
  readonly address: string
  readonly token: string | undefined
  readonly secure: boolean
  readonly caFile: string | undefined
}

export class ConfigError extends Error {
  override name = 'ConfigError'
}

export type Flags = Readonly<Record<string, string | boolean | undefined>>
type Env = Readonly<Record<string, string | undefined>>

export function loadConfig(flags: Flags, env: Env = process.env): PorticoConfig {
  const pick = (flag: string, variable: string): string | undefined => {
    const value = flags[flag]
    if (typeof value === 'string') return value
    const fromEnv = env[variable]
    return fromEnv === undefined || fromEnv === '' ? undefined : fromEnv
  }
  const source = (flag: string, variable: string) => (typeof flags[flag] === 'string' ? `--${flag}` : variable)

  return {
    host: pick('host', 'PORTICO_HOST') ?? '0.0.0.0',
    port: port(pick('port', 'PORTICO_PORT') ?? '8080', source('port', 'PORTICO_PORT')),
    adminHost: pick('admin-host', 'PORTICO_ADMIN_HOST') ?? '127.0.0.1',
    adminPort: port(pick('admin-port', 'PORTICO_ADMIN_PORT') ?? '9901', source('admin-port', 'PORTICO_ADMIN_PORT')),
    routesDir: resolve(pick('routes', 'PORTICO_ROUTES') ?? './routes'),
    adminToken: env.PORTICO_ADMIN_TOKEN ? adminToken(env.PORTICO_ADMIN_TOKEN, 'PORTICO_ADMIN_TOKEN') : undefined,
    adminTokensFile: env.PORTICO_ADMIN_TOKENS_FILE ? resolve(env.PORTICO_ADMIN_TOKENS_FILE) : undefined,
    metricsPublic: env.PORTICO_METRICS_PUBLIC === 'true',
    trustProxy: trustProxy(pick('trust-proxy', 'PORTICO_TRUST_PROXY')),
    maxBodyBytes: bytes(pick('max-body', 'PORTICO_MAX_BODY') ?? '10mb', source('max-body', 'PORTICO_MAX_BODY')),
    drainTimeoutMs: duration(pick('drain-timeout', 'PORTICO_DRAIN_TIMEOUT') ?? '25s', source('drain-timeout', 'PORTICO_DRAIN_TIMEOUT')),
    // Kubernetes takes a few seconds to drop a terminating pod from its endpoints; until then traffic still comes.
    shutdownDelayMs: duration(pick('shutdown-delay', 'PORTICO_SHUTDOWN_DELAY') ?? '5s', source('shutdown-delay', 'PORTICO_SHUTDOWN_DELAY')),
    logLevel: pick('log-level', 'PORTICO_LOG_LEVEL') ?? 'info',
    accessLog: accessLogTarget(pick('access-log', 'PORTICO_ACCESS_LOG') ?? 'stdout'),
    redisUrl: env.REDIS_URL || undefined,
    consul: consulConnection(env),
    consulRoutes: (pick('consul-routes', 'PORTICO_CONSUL_ROUTES') ?? (flags['consul-routes'] === true ? 'true' : 'false')) === 'true',
    workers: workers(pick('workers', 'PORTICO_WORKERS') ?? '1', source('workers', 'PORTICO_WORKERS')),
    ...tlsConfig(pick, source),
  }
}

function tlsConfig(pick: (flag: string, variable: string) => string | undefined, source: (flag: string, variable: string) => string): Pick<PorticoConfig, 'tls' | 'redirectPort'> {
  const certFile = pick('tls-cert', 'PORTICO_TLS_CERT')
  const keyFile = pick('tls-key', 'PORTICO_TLS_KEY')
  const dir = pick('tls-dir', 'PORTICO_TLS_DIR')
  const http2 = pick('http2', 'PORTICO_HTTP2')
  const redirect = pick('redirect-port', 'PORTICO_REDIRECT_PORT')
  if ((certFile === undefined) !== (keyFile === undefined)) throw new ConfigError(`${certFile === undefined ? '--tls-key' : '--tls-cert'} needs ${certFile === undefined ? '--tls-cert' : '--tls-key'} too (PORTICO_TLS_CERT and PORTICO_TLS_KEY)`)
  if (certFile !== undefined && dir !== undefined) throw new ConfigError('--tls-dir and --tls-cert/--tls-key are two ways to give certificates: use one')
  if (http2 !== undefined && http2 !== 'true' && http2 !== 'false') throw new ConfigError(`${source('http2', 'PORTICO_HTTP2')}: "${http2}" is not true or false`)
  const tlsSource = dir !== undefined ? { dir: resolve(dir) } : certFile !== undefined && keyFile !== undefined ? { certFile: resolve(certFile), keyFile: resolve(keyFile) } : undefined
  if (tlsSource === undefined && (http2 !== undefined || redirect !== undefined)) throw new ConfigError(`${http2 !== undefined ? '--http2' : '--redirect-port'} needs TLS: give --tls-cert and --tls-key, or --tls-dir`)
  return {
    tls: tlsSource && {
      source: tlsSource,
      http2: http2 !== 'false',
      http2StallMs: duration(pick('http2-stall-timeout', 'PORTICO_HTTP2_STALL_TIMEOUT') ?? '30s', source('http2-stall-timeout', 'PORTICO_HTTP2_STALL_TIMEOUT')),
    },
    redirectPort: redirect === undefined ? undefined : port(redirect, source('redirect-port', 'PORTICO_REDIRECT_PORT')),
  }
}

/** The standard Consul variables, as the consul CLI reads them (the npm client reads none of them). */
export function consulConnection(env: Env): ConsulConnection {
  const raw = env.CONSUL_HTTP_ADDR || '127.0.0.1:8500'
  const secureByEnv = env.CONSUL_HTTP_SSL === 'true' || env.CONSUL_HTTP_SSL === '1'
  const withScheme = /^https?:\/\//.test(raw) ? raw : `${secureByEnv ? 'https' : 'http'}://${raw}`
  let url: URL
  try {
    url = new URL(withScheme)
  } catch {
    throw new ConfigError(`CONSUL_HTTP_ADDR: "${raw}" is not an address (expected host:port or http(s)://host:port)`)
  }
  return {
    address: `${url.protocol}//${url.host}`,
    token: env.CONSUL_HTTP_TOKEN || undefined,
    secure: url.protocol === 'https:',
    caFile: env.CONSUL_CACERT || undefined,
  }
}

function port(text: string, from: string): number {
  const value = Number(text)
  if (!/^\d+$/.test(text) || value > 65535) throw new ConfigError(`${from}: "${text}" is not a port number (0-65535)`)
  return value
}

function duration(text: string, from: string): number {
  try {
    return parseDuration(text)
  } catch (error) {
    throw new ConfigError(`${from}: ${(error as Error).message}`)
  }
}

function workers(text: string, from: string): number | 'auto' {
  if (text === 'auto') return 'auto'
  const count = Number(text)
  if (!Number.isInteger(count) || count < 1 || count > 256) throw new ConfigError(`${from}: "${text}" is not a worker count (1-256, or auto)`)
  return count
}

function bytes(text: string, from: string): number {
  try {
    return parseSize(text)
  } catch (error) {
    throw new ConfigError(`${from}: ${(error as Error).message}`)
  }
}

function accessLogTarget(text: string): string {
  return ['stdout', 'stderr', 'off'].includes(text) ? text : resolve(text)
}

function trustProxy(text: string | undefined): boolean | number | string {
  if (text === undefined || text === 'false') return false
  if (text === 'true') return true
  if (/^\d+$/.test(text)) return Number(text)
  return text // addresses or CIDRs, comma separated, as fastify takes them
}

// A bearer credential is one run of visible characters (RFC 6750 §2.1): a token with a space or a control character in
// it could be set, but no Authorization header could ever carry it.
const ADMIN_TOKEN = /^[\x21-\x7e]{8,}$/

/** An admin token as given, or why it can never authenticate: refused at start-up, not at the first request. */
function adminToken(token: string, from: string): string {
  if (!ADMIN_TOKEN.test(token)) throw new ConfigError(`${from}: an admin token is at least 8 visible ASCII characters, without spaces or control characters`)
  return token
}

/** `name:token` lines (blank lines and `#` comments skipped): the admin tokens of a PORTICO_ADMIN_TOKENS_FILE. */
export function parseAdminTokens(text: string, file: string): { name: string; token: string }[] {
  return text.split('\n').flatMap((line, i) => {
    const trimmed = line.trim()
    if (trimmed === '' || trimmed.startsWith('#')) return []
    const colon = trimmed.indexOf(':')
    if (colon <= 0) throw new ConfigError(`${file}:${i + 1}: expected name:token`)
    return [{ name: trimmed.slice(0, colon).trim(), token: adminToken(trimmed.slice(colon + 1).trim(), `${file}:${i + 1}`) }]
  })
}
