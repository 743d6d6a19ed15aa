// Example service: users. `PORT=9001 node examples/users.js`; registers itself in Consul when CONSUL_HTTP_ADDR is set.
import { serve } from './lib/serve.js'

const users = new Map([
  ['1', { id: '1', name: 'Ada Lovelace' }],
  ['2', { id: '2', name: 'Grace Hopper' }],
])

serve({
  name: 'users',
  port: Number(process.env.PORT ?? 9001),
  handle(req) {
    const id = new URL(req.url ?? '/', 'http://x').pathname.split('/').filter(Boolean).at(-1)
    if (id === undefined || id === 'users') return { body: [...users.values()] }
    const user = users.get(id)
    return user ? { body: user } : { status: 404, body: { error: `no user ${id}` } }
  },
})
