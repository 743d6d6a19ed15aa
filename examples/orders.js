// Example service: orders. `PORT=9002 node examples/orders.js`; registers itself in Consul when CONSUL_HTTP_ADDR is set.
import { serve } from './lib/serve.js'

const orders = [
  { id: 'o-1', user: '1', total: 42.5 },
  { id: 'o-2', user: '2', total: 7 },
]

serve({
  name: 'orders',
  port: Number(process.env.PORT ?? 9002),
  handle(req) {
    const user = new URL(req.url ?? '/', 'http://x').searchParams.get('user')
    return { body: user ? orders.filter((o) => o.user === user) : orders }
  },
})
