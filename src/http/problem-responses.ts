import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Socket } from 'node:net'
import { STATUS_CODES, type ServerResponse } from 'node:http'
import { GatewayError, PROBLEM_CONTENT_TYPE, toProblem, type GatewayErrorCode } from '../kernel/errors.js'
import { classifyUpstreamFailure, isUpstreamResponseError } from '../kernel/upstream-errors.js'

const NO_TIMEOUTS = { connectMs: 0, responseMs: 0 }

const kProblemCode = Symbol('portico.problemCode')

/** The problem code of a response the gateway answered itself, for metrics and logs. */
export function problemCodeOf(reply: FastifyReply): GatewayErrorCode | undefined {
  return (reply as FastifyReply & { [kProblemCode]?: GatewayErrorCode })[kProblemCode]
}

export function sendProblem(reply: FastifyReply, error: GatewayError): FastifyReply {
  ;(reply as FastifyReply & { [kProblemCode]?: GatewayErrorCode })[kProblemCode] = error.code
  // A refused body is left unread: the connection cannot carry another request after it.
  if (error.code === 'payload_too_large') reply.header('connection', 'close')
  return reply
    .code(error.status)
    .headers({ ...error.headers, 'content-type': PROBLEM_CONTENT_TYPE, 'x-request-id': reply.request.id, 'cache-control': 'no-store' })
    .send(JSON.stringify(toProblem(error, reply.request.id, reply.request.originalUrl)))
}

/** Fastify's own client errors (bad body, bad content type, …) carry a 4xx status; they are the client's fault. */
function fromFastifyError(error: FastifyError): GatewayError {
  const status = error.statusCode ?? 500
  const code: GatewayErrorCode = status === 413 ? 'payload_too_large' : status >= 400 && status < 500 ? 'bad_request' : 'internal'
  return new GatewayError(code, code === 'internal' ? 'The gateway failed unexpectedly; see its logs for this request id' : error.message, { cause: error })
}

/** Every answer the gateway itself gives is application/problem+json, including the ones fastify would format. */
export function installProblemResponses(app: FastifyInstance, notFound: (request: FastifyRequest, reply: FastifyReply) => void = noRoute): void {
  app.setErrorHandler((error: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
    // An upstream body that breaks HTTP after its headers (a bad chunk size, say) errors the stream fastify sends.
    const problem = error instanceof GatewayError ? error : isUpstreamResponseError(error) ? classifyUpstreamFailure(error, 'the upstream', NO_TIMEOUTS) : fromFastifyError(error)
    if (problem.status >= 500 && !(error instanceof GatewayError)) request.log.error({ err: error }, 'unexpected gateway error')
    return sendProblem(reply, problem)
  })
  app.setNotFoundHandler(notFound)
  // CONNECT never reaches a request handler: node hands over the socket.
  app.server.on('connect', (_request: unknown, socket: Socket) => writeRawProblem(socket, new GatewayError('not_implemented', 'CONNECT is not supported: Portico is not a forward proxy')))
}

function noRoute(request: FastifyRequest, reply: FastifyReply): void {
  sendProblem(reply, new GatewayError('no_route', `No route serves ${request.method} ${request.url.split('?')[0] ?? ''}`))
}

/** fastify's `frameworkErrors`: a URL fastify cannot decode is a bad path, answered like every other. */
export function answerFrameworkError(error: FastifyError, _request: FastifyRequest, reply: FastifyReply): void {
  sendProblem(reply, new GatewayError('bad_path', error.message, { cause: error }))
}

/**
 * fastify's `clientErrorHandler`: requests node's HTTP parser rejects never reach fastify's handlers, so they are
 * answered here, in the same format and from the same table, before the connection closes. A pipelined request's
 * answer still in flight goes out whole first: nothing is written into the middle of another response.
 */
export function answerClientError(error: Error & { code?: string }, socket: Socket, bodyBroken?: (inFlight: ServerResponse, error: Error) => void): void {
  const problem = new GatewayError(CLIENT_ERROR_CODES[error.code ?? ''] ?? 'bad_request', `The request could not be parsed (${error.code ?? 'bad request'})`)
  const inFlight = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage
  if (inFlight && !inFlight.writableFinished) {
    inFlight.once('close', () => socket.destroy())
    // The parser failed inside the in-flight request's own body (a bad chunk): its answer would wait for a body that
    // never ends. Its owner answers it now (`bodyBroken`), or the connection closes.
    if (inFlight.req?.complete === false) return bodyBroken ? bodyBroken(inFlight, error) : void socket.destroy()
    inFlight.once('finish', () => writeRawProblem(socket, problem))
    return
  }
  writeRawProblem(socket, problem)
}

/** A problem+json answer written straight to a socket that fastify does not serve, then the connection closed. */
function writeRawProblem(socket: Socket, problem: GatewayError): void {
  if (!socket.writable) return void socket.destroy()
  const body = JSON.stringify(toProblem(problem))
  const headers = Object.entries(problem.headers).map(([name, value]) => `${name}: ${value}\r\n`).join('')
  socket.end(
    `HTTP/1.1 ${problem.status} ${STATUS_CODES[problem.status]}\r\nContent-Type: ${PROBLEM_CONTENT_TYPE}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nCache-Control: no-store\r\n${headers}Connection: close\r\n\r\n${body}`,
  )
}

const CLIENT_ERROR_CODES: Readonly<Record<string, GatewayErrorCode>> = {
  HPE_HEADER_OVERFLOW: 'header_too_large',
  // RFC 9110 §9.1: a method the server does not recognise is 501.
  HPE_INVALID_METHOD: 'not_implemented',
  ERR_HTTP_REQUEST_TIMEOUT: 'request_timeout',
  ERR_HTTP_HEADERS_TIMEOUT: 'request_timeout',
}
