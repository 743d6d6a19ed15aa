import type { LogFn } from 'pino'

/**
 * The logger every layer below the HTTP servers takes: pino's shape, so pino loggers and fastify's request loggers
 * fit as they are, and no fastify type reaches the config plane, the policies or the shared state.
 */
export interface Logger {
  readonly fatal: LogFn
  readonly error: LogFn
  readonly warn: LogFn
  readonly info: LogFn
  readonly debug: LogFn
  readonly trace: LogFn
  child(bindings: Record<string, unknown>): Logger
  isLevelEnabled(level: string): boolean
}
