// What the engine costs: fastify with one catch-all route that hands the request to undici's dispatch API and writes
// the answer straight to the response (no reply-from, no body stream, none of a gateway's work: no header rewriting,
// timeouts, retries, logs or metrics). Not a proxy to ship; the floor a fastify + undici gateway stands on.
import Fastify from 'fastify'
import { Agent } from 'undici'

const origin = new URL(process.argv[2]).origin
const agent = new Agent({ connections: 128, keepAliveTimeout: 4000 })
const app = Fastify({ logger: false })
app.removeAllContentTypeParsers()
app.addContentTypeParser('*', (_request, payload, done) => done(null, payload))

class ToResponse {
  constructor(res) {
    this.res = res
  }
  onConnect() {}
  onError() {
    if (!this.res.headersSent) this.res.statusCode = 502
    this.res.end()
  }
  onHeaders(status, rawHeaders) {
    const headers = {}
    for (let i = 0; i < rawHeaders.length; i += 2) headers[rawHeaders[i].toString('latin1').toLowerCase()] = rawHeaders[i + 1].toString('latin1')
    delete headers.connection
    delete headers['keep-alive']
    delete headers['transfer-encoding']
    this.res.writeHead(status, headers)
    return true
  }
  onData(chunk) {
    return this.res.write(chunk)
  }
  onComplete() {
    this.res.end()
  }
}

app.all('/*', (request, reply) => {
  reply.hijack()
  const headers = { ...request.headers }
  delete headers.connection
  const body = request.method === 'GET' || request.method === 'HEAD' ? null : request.raw
  agent.dispatch({ origin, path: request.url, method: request.method, headers, body }, new ToResponse(reply.raw))
})
await app.listen({ port: Number(process.argv[3] ?? 0), host: '127.0.0.1' })
console.log(`listening ${app.server.address().port}`)
