import type { FastifyBaseLogger } from 'fastify'
import type { Bindings, ChildLoggerOptions } from 'pino'

/** A pino log method called with whatever its caller passed on. */
type AnyLine = (...line: unknown[]) => void

/**
 * fastify's `request.log`, made into a pino child only when something logs through it. fastify builds a child per
 * request, and with the route's level (Portico's routes log at `error` unless the gateway runs at debug) pino rebuilds
 * every log method of it: ~0.65 µs a request (Node 24) for a logger a proxied request that succeeds never writes to.
 * This object, with fastify's check of a logger a factory of its own made, costs ~0.3.
 */
export class RequestLogger implements FastifyBaseLogger {
  #logger: FastifyBaseLogger | undefined
  readonly #parent: FastifyBaseLogger
  readonly #bindings: Bindings
  readonly #options: ChildLoggerOptions

  constructor(parent: FastifyBaseLogger, bindings: Bindings, options: ChildLoggerOptions) {
    this.#parent = parent
    this.#bindings = bindings
    this.#options = options
  }

  get #child(): FastifyBaseLogger {
    return (this.#logger ??= this.#parent.child(this.#bindings, this.#options))
  }

  get level(): string {
    return this.#logger?.level ?? this.#options.level ?? this.#parent.level
  }

  set level(level: string) {
    this.#child.level = level
  }

  // Methods, not arrow fields: one object a request and no closures; `this.#child` builds the child on the first line.
  fatal(...line: unknown[]): void {
    ;(this.#child.fatal as AnyLine)(...line)
  }
  error(...line: unknown[]): void {
    ;(this.#child.error as AnyLine)(...line)
  }
  warn(...line: unknown[]): void {
    ;(this.#child.warn as AnyLine)(...line)
  }
  info(...line: unknown[]): void {
    ;(this.#child.info as AnyLine)(...line)
  }
  debug(...line: unknown[]): void {
    ;(this.#child.debug as AnyLine)(...line)
  }
  trace(...line: unknown[]): void {
    ;(this.#child.trace as AnyLine)(...line)
  }
  silent(): void {}

  child(bindings: Bindings, options?: ChildLoggerOptions): FastifyBaseLogger {
    return this.#child.child(bindings, options)
  }
}

/** fastify's `childLoggerFactory`: a {@link RequestLogger} per request instead of a pino child. */
export function lazyRequestLogger(parent: FastifyBaseLogger, bindings: Bindings, options: ChildLoggerOptions): FastifyBaseLogger {
  return new RequestLogger(parent, bindings, options)
}
