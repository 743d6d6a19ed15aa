// The benchmark's trace collector: takes OTLP/HTTP exports and drops them, answering as a collector would.
import { createServer } from 'node:http'
const server = createServer((req, res) => {
  req.resume()
  req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'))
})
server.listen(Number(process.argv[2] ?? 0), '127.0.0.1', () => console.log(`listening ${server.address().port}`))
