import type { MetricsSources } from '../../src/observability/metrics.js'
import { POLICIES } from '../../src/policies/index.js'
import { PolicyEvents } from '../../src/policies/policy-events.js'
import { AttemptStats } from '../../src/proxy/attempt-stats.js'

/** Metrics sources of a gateway with nothing to report: for tests of the registry itself. */
export const emptySources = (): MetricsSources => ({
  policyKinds: POLICIES,
  livePolicies: () => [],
  splitTargets: () => [],
  discovery: () => ({ status: 'ok' }),
  sharedState: () => ({ status: 'ok' }),
  routes: () => ({ version: 1, routes: 0, refusedSources: 0 }),
  gateway: () => ({ policyEvents: new PolicyEvents(), attempts: () => new AttemptStats(), activeRequests: () => [], connections: async () => 0 }),
  forcedBreakers: () => [],
  redisCommands: () => undefined,
  accessLogDropped: () => 0,
})
