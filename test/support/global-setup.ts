import type { TestProject } from 'vitest/node'
import { startConsul } from './consul.js'
import { startRedis } from './redis.js'

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string
    consulAddress: string
  }
}

/** One Redis and one Consul agent for the whole run; fault tests start their own so they can stop them. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const [redis, consul] = await Promise.allSettled([startRedis(), startConsul()])
  const stopAll = async () => {
    await Promise.all([redis, consul].map((started) => (started.status === 'fulfilled' ? started.value.stop() : undefined)))
  }
  if (redis.status === 'rejected' || consul.status === 'rejected') {
    await stopAll() // the one that did start must not outlive a failed set-up
    throw redis.status === 'rejected' ? redis.reason : (consul as PromiseRejectedResult).reason
  }
  project.provide('redisUrl', redis.value.url)
  project.provide('consulAddress', consul.value.address)
  return stopAll
}
