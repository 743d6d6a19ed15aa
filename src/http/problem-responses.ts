import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Socket } from 'node:net'
import { STATUS_CODES } from 'node:http'
import { GatewayError, PROBLEM_CONTENT_TYPE, toProblem, type GatewayErrorCode } from '../kernel/errors.js'

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
export function installProblemResponses(app: FastifyInstance): void {
  app.setErrorHandler((error: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
    const problem = error instanceof GatewayError ? error : fromFastifyError(error)
    if (problem.status >= 500 && !(error instanceof GatewayError)) request.log.error({ err: error }, 'unexpected gateway error')
    return sendProblem(reply, problem)
  })
  app.setNotFoundHandler((request, reply) =>
    sendProblem(reply, new GatewayError('no_route', `No route serves ${request.method} ${request.url.split('?')[0] ?? ''}`)),
  )
  // Requests node's HTTP parser rejects never reach fastify: answer them in the same format before closing.
  app.server.removeAllListeners('clientError')
  app.server.on('clientError', (error: Error & { code?: string }, socket: Socket) => {
    if (!socket.writable) return socket.destroy()
    const status = error.code === 'HPE_HEADER_OVERFLOW' ? 431 : error.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400
    const body = JSON.stringify({
      type: 'https://portico.dev/problems/bad-request',
      title: STATUS_CODES[status],
      status,
      detail: `The request could not be parsed (${error.code ?? 'bad request'})`,
      code: 'bad_request',
    })
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: ${PROBLEM_CONTENT_TYPE}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    )
  })
}
