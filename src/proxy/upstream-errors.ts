import { GatewayError } from '../errors.js'
import { BODY_TOO_LARGE } from './body-limit.js'

const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT', 'FST_REPLY_FROM_GATEWAY_TIMEOUT', 'ETIMEDOUT'])
// An upstream that broke HTTP (a control character in a header value, say) fails undici's parser: an HTTPParserError,
// or a length mismatch once undici has seen a Content-Length.
const BAD_RESPONSE_CODES = new Set(['FST_REPLY_FROM_BAD_GATEWAY', 'UND_ERR_INFO', 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH'])

/** What a failed forward means for the client: reply-from's and undici's errors mapped onto our codes. */
export function classifyUpstreamFailure(error: unknown, instance: string, timeoutMs: number): GatewayError {
  const codes = errorCodes(error)
  const found = (set: Set<string>) => codes.some((c) => set.has(c))
  if (codes.includes(BODY_TOO_LARGE)) return new GatewayError('payload_too_large', `The streamed body exceeded the gateway's limit; ${instance} did not get it whole`, { cause: error })
  if (found(TIMEOUT_CODES)) {
    const phase = codes.includes('UND_ERR_CONNECT_TIMEOUT') ? 'a connection to' : 'a response from'
    return new GatewayError('upstream_timeout', `No ${phase} ${instance} within ${timeoutMs} ms`, { cause: error })
  }
  if (found(BAD_RESPONSE_CODES) || [...causesOf(error)].some((e) => e.name === 'HTTPParserError')) return new GatewayError('upstream_bad_response', `${instance} sent an invalid response`, { cause: error })
  const reason = codes.find((c) => /^E[A-Z]+$/.test(c)) ?? codes.at(-1) ?? 'error'
  return new GatewayError('upstream_unreachable', `${instance} could not be reached (${reason})`, { cause: error })
}

/** The `code` of an error and of each of its causes, outermost first. */
export function errorCodes(error: unknown): string[] {
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
