import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Two cores: gateways, upstreams, Redis and Consul all share them.
    maxWorkers: 2,
    pool: 'forks',
  },
})
