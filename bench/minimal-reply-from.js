// The yardstick's engine without its route wrapper: @fastify/reply-from registered straight, one catch-all route that
// hands each request on (how Portico uses it). Against bench/minimal-proxy.js it measures what @fastify/http-proxy's
// handler adds per request (its destination checks and URL parses, its header sanitising).
import Fastify from 'fastify'
import replyFrom from '@fastify/reply-from'
const app = Fastify({ logger: false })
await app.register(replyFrom, { base: process.argv[2] })
app.get('/api/*', (request, reply) => reply.from(request.url))
await app.listen({ port: Number(process.argv[3] ?? 0), host: '127.0.0.1' })
console.log(`listening ${app.server.address().port}`)
