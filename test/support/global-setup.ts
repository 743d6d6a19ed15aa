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
  const [redis, consul] = await Promise.all([startRedis(), startConsul()])
  project.provide('redisUrl', redis.url)
  project.provide('consulAddress', consul.address)
  return async () => {
    await Promise.all([redis.stop(), consul.stop()])
  }
}
