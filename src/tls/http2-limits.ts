import { constants, type Http2SecureServer, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2'
import type { Logger } from '../kernel/logger.js'

/** What one HTTP/2 connection may do: node's own limits, set where its defaults are unbounded, and budgets of our own. */
export const HTTP2_LIMITS = {
  /** Streams open at once per connection (node's default is 2³²−1; nginx's 128, Envoy's 100). More are refused (RST_STREAM REFUSED_STREAM). */
  maxConcurrentStreams: 100,
  /** One request's header block, decompressed (names + values + 32 bytes per field, RFC 9113 §6.5.2). */
  maxHeaderListSize: 32 * 1024,
  maxHeaderListPairs: 128,
  /** Per connection, in MiB: nghttp2's buffers past it make node refuse new streams (ENHANCE_YOUR_CALM). */
  maxSessionMemory: 10,
  /** A connection with no frame for this long is closed (fastify's http2SessionTimeout). */
  sessionIdleMs: 72_000,
}

/**
 * Budgets for what costs the server work and the client nothing: each a token bucket per connection, a burst and a
 * rate per second. A connection that spends a budget dry is sent GOAWAY ENHANCE_YOUR_CALM and closed.
 * - resets: streams the client cancels before their answer ended (rapid reset, CVE-2023-44487: each opened stream is
 *   a request the gateway starts; node ≥ 22.11 has a knob for this, Node 20 has none). Browsers cancel a few when a
 *   page is left; hundreds a second is an attack.
 * - pings and settings: every PING and SETTINGS frame is answered; a flood of them is work for nothing.
 */
export const HTTP2_BUDGETS = {
  resets: { burst: 100, perSecond: 10 },
  pings: { burst: 50, perSecond: 5 },
  settings: { burst: 20, perSecond: 1 },
} as const

export type Http2CutReason = 'rapid_reset' | 'ping_flood' | 'settings_flood' | 'stalled_stream'

class TokenBucket {
  #tokens: number
  #at = Date.now()
  readonly #burst: number
  readonly #perMs: number

  constructor(budget: { burst: number; perSecond: number }) {
    this.#tokens = this.#burst = budget.burst
    this.#perMs = budget.perSecond / 1000
  }

  /** Takes a token; false when there was none left. */
  take(): boolean {
    const now = Date.now()
    this.#tokens = Math.min(this.#burst, this.#tokens + (now - this.#at) * this.#perMs)
    this.#at = now
    if (this.#tokens < 1) return false
    this.#tokens -= 1
    return true
  }
}

/**
 * Applies the budgets to every HTTP/2 connection of `server`, and cuts a stream whose client took no byte of its
 * answer for `stallMs` (a window left at zero holds the stream and its upstream response open otherwise; a stream
 * idle with nothing to send, a long poll, is left alone).
 */
export function limitHttp2Sessions(server: Http2SecureServer, options: { stallMs: number; logger: Logger; onCut: (reason: Http2CutReason) => void }): void {
  const cutting = new WeakSet<ServerHttp2Session>()
  const cut = (session: ServerHttp2Session, reason: Http2CutReason) => {
    if (session.destroyed || cutting.has(session)) return
    cutting.add(session)
    options.onCut(reason)
    options.logger.warn({ client: session.socket?.remoteAddress, reason }, 'HTTP/2 connection cut: it went past its budget')
    // The GOAWAY goes out before the connection closes (a destroy at once would drop it); its streams end with it.
    session.goaway(constants.NGHTTP2_ENHANCE_YOUR_CALM)
    setImmediate(() => session.destroy())
  }
  server.on('sessionError', (error: Error) => options.logger.debug({ err: error }, 'HTTP/2 session error'))
  server.on('session', (session: ServerHttp2Session) => {
    session.setTimeout(HTTP2_LIMITS.sessionIdleMs, () => session.close())
    const resets = new TokenBucket(HTTP2_BUDGETS.resets)
    const pings = new TokenBucket(HTTP2_BUDGETS.pings)
    const settings = new TokenBucket(HTTP2_BUDGETS.settings)
    session.on('ping', () => void (pings.take() || cut(session, 'ping_flood')))
    session.on('remoteSettings', () => void (settings.take() || cut(session, 'settings_flood')))
    session.on('stream', (stream: ServerHttp2Stream) => {
      stream.once('aborted', () => void (resets.take() || cut(session, 'rapid_reset')))
      stream.setTimeout(options.stallMs, () => {
        if (stream.bufferSize === 0 && stream.writableLength === 0) return
        options.onCut('stalled_stream')
        stream.close(constants.NGHTTP2_ENHANCE_YOUR_CALM)
      })
    })
  })
}
