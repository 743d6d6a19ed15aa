// fast-gateway (restana + fast-proxy-lite) with one route to the same upstream, as its README configures it.
import gateway from 'fast-gateway'
const server = gateway({ routes: [{ prefix: '/api', prefixRewrite: '/api', target: process.argv[2] }] })
const listening = await server.start(Number(process.argv[3] ?? 0), '127.0.0.1')
console.log(`listening ${listening.address().port}`)
