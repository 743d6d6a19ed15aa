import { circuitBreakerPolicy } from './circuit-breaker/circuit-breaker.js'
import { concurrencyLimitPolicy } from './concurrency-limit/concurrency-limit.js'
import { outlierDetectionPolicy } from './outlier-detection/outlier-detection.js'
import type { AnyPolicyKind } from './policy.js'
import { rateLimitPolicy } from './rate-limit/rate-limit.js'
import { retryPolicy } from './retry/retry.js'

/**
 * Every route policy, in the order they act: request guards run in this order before an instance is picked, and
 * attempt wrappers nest in it, the first outermost (a retry wraps the breaker, which counts every attempt).
 */
export const POLICIES: readonly AnyPolicyKind[] = [rateLimitPolicy, concurrencyLimitPolicy, retryPolicy, circuitBreakerPolicy, outlierDetectionPolicy]
