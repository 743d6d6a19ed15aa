import { GatewayError } from './errors.js'

/** The code a streamed request body fails with once it passes the gateway's limit. */
export const BODY_TOO_LARGE = 'PORTICO_BODY_TOO_LARGE'
/** The code of the error an attempt ends with when its client went away. */
export const CLIENT_GONE = 'PORTICO_CLIENT_GONE'
/** The code of the error an attempt ends with when the client's body broke HTTP's framing midway (a bad chunk). */
export const CLIENT_BAD_BODY = 'PORTICO_CLIENT_BAD_BODY'
/** The code of the error an attempt ends with when no response came within its timeout (queue time included). */
export const RESPONSE_TIMEOUT = 'PORTICO_RESPONSE_TIMEOUT'

// undici's and reply-from's error codes, by what they mean for the gateway.
const CONNECT_ERRORS = new Set(['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_SOCKET'])
// No connection came about, so nothing of the request left the gateway (a reset may come after sending).
const NOTHING_SENT_ERRORS = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'UND_ERR_CONNECT_TIMEOUT'])
const RESPONSE_TIMEOUTS = new Set([RESPONSE_TIMEOUT, 'UND_ERR_HEADERS_TIMEOUT', 'FST_REPLY_FROM_GATEWAY_TIMEOUT'])
const TIMEOUTS = new Set([...RESPONSE_TIMEOUTS, 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT', 'ETIMEDOUT'])
// An upstream that broke HTTP (a control character in a header value, say) fails undici's parser: an HTTPParserError,
// or a length mismatch once undici has seen a Content-Length.
const BAD_RESPONSE_CODES = new Set(['FST_REPLY_FROM_BAD_GATEWAY', 'UND_ERR_INFO', 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH'])
// A path the engine refused to send (GatewayError's own code) is the client's too: nothing left for the upstream.
const CLIENT_FAULTS = new Set<string>([BODY_TOO_LARGE, CLIENT_GONE, CLIENT_BAD_BODY, 'bad_path'])

const hasCode = (error: unknown, set: ReadonlySet<string>): boolean => errorCodes(error).some((c) => set.has(c))

/** The attempt never reached a working connection (refused, reset, unreachable, connect timeout). */
export const isConnectError = (error: unknown): boolean => hasCode(error, CONNECT_ERRORS)
/** The attempt failed before a connection existed: the upstream got nothing, so any method may be sent again. */
export const isNothingSent = (error: unknown): boolean => hasCode(error, NOTHING_SENT_ERRORS)
/** The upstream took longer than the response timeout to answer. */
export const isResponseTimeout = (error: unknown): boolean => hasCode(error, RESPONSE_TIMEOUTS)
/**
 * The client caused it (went away, sent too much, sent a body or a path that cannot be passed on): it says nothing
 * about the upstream, so no policy counts it.
 */
export const isClientFault = (error: unknown): boolean => hasCode(error, CLIENT_FAULTS)

/** An error from an upstream's response (undici's parser or its length checks), wherever it surfaces. */
export const isUpstreamResponseError = (error: unknown): boolean => hasCode(error, BAD_RESPONSE_CODES) || [...causesOf(error)].some(isParserError)

// undici's parser errors; and a 1xx it did not ask for ends as a SocketError "bad response" (nodejs/undici keeps 100
// Continue for requests that sent Expect).
const isParserError = (e: Error): boolean => e.name === 'HTTPParserError' || ((e as { code?: string }).code === 'UND_ERR_SOCKET' && e.message === 'bad response')

/** What a failed forward means for the client: reply-from's and undici's errors mapped onto our codes. */
export function classifyUpstreamFailure(error: unknown, instance: string, timeout: { readonly connectMs: number; readonly responseMs: number }): GatewayError {
  if (error instanceof GatewayError) return error
  const codes = errorCodes(error)
  if (codes.includes(CLIENT_BAD_BODY)) return new GatewayError('bad_request', 'The request body broke HTTP\'s framing midway; the upstream request was given up', { cause: error, headers: { connection: 'close' } })
  if (codes.includes(BODY_TOO_LARGE)) return new GatewayError('payload_too_large', `The streamed body exceeded the gateway's limit; ${instance} did not get it whole`, { cause: error })
  if (codes.some((c) => TIMEOUTS.has(c))) {
    return codes.includes('UND_ERR_CONNECT_TIMEOUT')
      ? new GatewayError('upstream_timeout', `No connection to ${instance} within ${timeout.connectMs} ms`, { cause: error })
      : new GatewayError('upstream_timeout', `No response from ${instance} within ${timeout.responseMs} ms`, { cause: error })
  }
  if (isUpstreamResponseError(error)) return new GatewayError('upstream_bad_response', `${instance} sent an invalid response`, { cause: error })
  const reason = codes.find((c) => /^E[A-Z]+$/.test(c)) ?? codes.at(-1) ?? 'error'
  return new GatewayError('upstream_unreachable', `${instance} could not be reached (${reason})`, { cause: error })
}

/** The `code` of an error and of each of its causes, outermost first. */
function errorCodes(error: unknown): string[] {
  const codes: string[] = []
  for (const e of causesOf(error)) {
    const code = (e as { code?: unknown }).code
    if (typeof code === 'string') codes.push(code)
    if (e instanceof AggregateError) codes.push(...e.errors.flatMap(errorCodes))
  }
  return codes
}

/** An error and its causes, outermost first (at most 8 deep). */
function* causesOf(error: unknown): Generator<Error> {
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) yield e
}
