// The part every example service shares: an HTTP server with /health, registered in Consul when CONSUL_HTTP_ADDR is set.
import { createServer } from 'node:http'
import { register } from 'portico/register'

/**
 * @param {{ name: string, port: number, handle: (req: import('node:http').IncomingMessage) => { status?: number, body: unknown } }} service
 */
export function serve({ name, port, handle }) {
  const instance = `${name}@${process.env.HOSTNAME ?? 'local'}:${port}`
  const server = createServer((req, res) => {
    const { status = 200, body } = req.url === '/health' ? { body: { status: 'ok' } } : handle(req)
    res.writeHead(status, { 'content-type': 'application/json', 'x-served-by': instance })
    res.end(JSON.stringify(body))
  })
  server.listen(port, process.env.HOST ?? '127.0.0.1', async () => {
    console.log(`${name} listening on ${port}`)
    if (!process.env.CONSUL_HTTP_ADDR) return
    // Deregisters on SIGTERM/SIGINT, then the process ends as the signal says.
    await register({
      name,
      port,
      tags: ['example'],
      meta: { version: '1' },
      health: { path: '/health', interval: process.env.HEALTH_INTERVAL ?? '5s' },
      deregisterOnSignals: true,
      log: (line) => console.log(`${name}: ${line}`),
    })
  })
  return server
}
