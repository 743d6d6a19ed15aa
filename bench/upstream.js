// The benchmark's upstream: a minimal Node HTTP server answering a small JSON body.
import { createServer } from 'node:http'
const body = JSON.stringify({ ok: true, service: 'bench' })
const server = createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
  res.end(body)
})
server.keepAliveTimeout = 60_000
server.listen(Number(process.argv[2] ?? 0), '127.0.0.1', () => console.log(`listening ${server.address().port}`))
