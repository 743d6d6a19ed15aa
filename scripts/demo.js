// `npm start`: the quick start. Starts the two example services on 9001 and 9002 and Portico on 8080 (admin 9901)
// with the shipped routes/, no Redis and no Consul. Ctrl-C stops all three.
import { spawn } from 'node:child_process'

const root = new URL('..', import.meta.url).pathname
const run = (args, env = {}) => spawn(process.execPath, args, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } })

const children = [
  run(['examples/users.js'], { PORT: '9001', CONSUL_HTTP_ADDR: '' }),
  run(['examples/orders.js'], { PORT: '9002', CONSUL_HTTP_ADDR: '' }),
  run(['dist/cli.js', 'start', ...process.argv.slice(2)]),
]
console.log('portico demo: try  curl localhost:8080/api/users/1  and  curl localhost:9901/admin/routes')

let stopping = false
const stop = (code) => {
  if (stopping) return
  stopping = true
  for (const child of children) if (child.exitCode === null) child.kill('SIGTERM')
  process.exitCode = code
}
for (const child of children) child.on('exit', (code) => stop(code ?? 0))
process.on('SIGINT', () => stop(0))
process.on('SIGTERM', () => stop(0))
