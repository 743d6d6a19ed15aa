// The yardstick: the smallest @fastify/http-proxy app, one upstream, no routing table, no policies.
import Fastify from 'fastify'
import proxy from '@fastify/http-proxy'
const app = Fastify({ logger: false })
await app.register(proxy, { upstream: process.argv[2], prefix: '/api' , rewritePrefix: '/api' })
await app.listen({ port: Number(process.argv[3] ?? 0), host: '127.0.0.1' })
console.log(`listening ${app.server.address().port}`)
