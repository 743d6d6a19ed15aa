import { authPolicy } from './auth/auth.js'
import { circuitBreakerPolicy } from './circuit-breaker/circuit-breaker.js'
import { concurrencyLimitPolicy } from './concurrency-limit/concurrency-limit.js'
import { outlierDetectionPolicy } from './outlier-detection/outlier-detection.js'
import type { AnyPolicyKind } from './policy.js'
import { rateLimitPolicy } from './rate-limit/rate-limit.js'
import { requestHeadersPolicy } from './request-headers/request-headers.js'
import { responseCachePolicy } from './response-cache/response-cache.js'
import { retryPolicy } from './retry/retry.js'

/**
 * Every route policy, in the order they act: request guards run in this order before an instance is picked (auth
 * first: no limit counts, and no upstream sees, a request it refuses; the limits after it can key on its consumer), and
 * attempt wrappers nest in it, the first outermost (a retry wraps the breaker, which counts every attempt). A cache hit
 * still counts against the limits before it, and the cache wraps every attempt of a miss, failed ones included. Header
 * transforms come before the cache, which keys on what they send.
 */
export const POLICIES: readonly AnyPolicyKind[] = [authPolicy, rateLimitPolicy, concurrencyLimitPolicy, requestHeadersPolicy, responseCachePolicy, retryPolicy, circuitBreakerPolicy, outlierDetectionPolicy]
