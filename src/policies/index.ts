import { authPolicy } from './auth/auth.js'
import { circuitBreakerPolicy } from './circuit-breaker/circuit-breaker.js'
import { corsPolicy } from './cors/cors.js'
import { concurrencyLimitPolicy } from './concurrency-limit/concurrency-limit.js'
import { mirrorPolicy } from './mirror/mirror.js'
import { outlierDetectionPolicy } from './outlier-detection/outlier-detection.js'
import type { AnyPolicyKind } from './policy.js'
import { rateLimitPolicy } from './rate-limit/rate-limit.js'
import { requestHeadersPolicy } from './request-headers/request-headers.js'
import { responseHeadersPolicy } from './response-headers/response-headers.js'
import { responseCachePolicy } from './response-cache/response-cache.js'
import { retryPolicy } from './retry/retry.js'

/**
 * Every route policy, in the order they act. Request guards run in this order before an instance is picked:
 * response header transforms first, so that they shape every answer, any refusal included; then CORS, which answers
 * preflights (they carry no credentials) and whose headers are the last word on an answer; then auth, so that no limit
 * counts, and no upstream sees, a request it refuses, and the limits after it can key on its consumer. A cache hit
 * still counts against the limits before it. Request header transforms come before the cache, which keys on what
 * they send, and before the mirror, whose copies carry them. Attempt wrappers nest in this order, the first
 * outermost: the cache wraps every attempt of a miss, failed ones included; the mirror wraps the retry, so a request
 * is copied once (and a cache hit never); a retry wraps the breaker, which counts every attempt. The kinds made per
 * target of a split (the breaker, outlier detection) come last: their wrappers are the target's, inside the route's.
 */
export const POLICIES: readonly AnyPolicyKind[] = [responseHeadersPolicy, corsPolicy, authPolicy, rateLimitPolicy, concurrencyLimitPolicy, requestHeadersPolicy, responseCachePolicy, mirrorPolicy, retryPolicy, circuitBreakerPolicy, outlierDetectionPolicy]
