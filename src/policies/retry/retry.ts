import type { Instance } from '../../balancer/instance.js'
import { backoffDelay } from '../../kernel/backoff.js'
import type { Logger } from '../../kernel/logger.js'
import { isConnectError, isNothingSent, isResponseTimeout } from '../../kernel/upstream-errors.js'
import type { AttemptHandler, AttemptWrapper, PolicyExchange, PolicyKind, PolicyRequest, PolicyRoute, Send, UpstreamResponse } from '../policy.js'
import { PolicyCounter, type PolicyEvents } from '../policy-events.js'
import { RetryBudget } from './retry-budget.js'
import { RetrySchema, toRetryConfig, type RetryConfig, type RetrySpec } from './schema.js'

const RETRIES = new PolicyCounter('portico_retries_total', 'Retries by route and result: retried, budget_exhausted.', 'result')

export const retryPolicy: PolicyKind<RetrySpec, RetryConfig> = {
  key: 'retry',
  schema: RetrySchema,
  toConfig: toRetryConfig,
  create: (route, config, { logger, state, events }) => {
    const budget = new RetryBudget(config.budgetPercent, { state, route: route.name })
    return {
      wrap: retrying({ route, config, budget, logger, events }),
      describe: () => ({ attempts: config.attempts, budgetPercent: config.budgetPercent, deadlineMs: config.deadlineMs }),
      stop: () => budget.stop(),
    }
  },
  counters: [RETRIES],
}

interface RetryPolicy {
  readonly route: PolicyRoute
  readonly config: RetryConfig
  readonly budget: RetryBudget
  readonly logger: Logger
  readonly events: PolicyEvents
}

/** Retries an attempt on another instance when its outcome is one the route retries, within budget and deadline. */
function retrying(policy: RetryPolicy): AttemptWrapper {
  return (next) =>
    function retry(ex, handler) {
      policy.budget.recordRequest()
      const attempt = new RetryingAttempt(policy, next, handler, ex)
      ex.timeoutMs = attempt.timeLeft()
      next(ex, attempt)
    }
}

/** One request's retries: its own state (instances tried, the backoff timer), cancelled when the client goes away. */
class RetryingAttempt implements AttemptHandler {
  readonly #policy: RetryPolicy
  readonly #next: Send
  readonly #downstream: AttemptHandler
  readonly #tried: Set<string>
  readonly #deadline: number
  #backoff: NodeJS.Timeout | undefined = undefined

  constructor(policy: RetryPolicy, next: Send, downstream: AttemptHandler, ex: PolicyExchange) {
    this.#policy = policy
    this.#next = next
    this.#downstream = downstream
    this.#tried = new Set([ex.instance.id])
    this.#deadline = Date.now() + policy.config.deadlineMs
  }

  /** What the next attempt may wait: the response timeout, or less once the deadline is nearer. */
  timeLeft(): number {
    return Math.max(1, Math.min(this.#policy.route.timeout.responseMs, this.#deadline - Date.now()))
  }

  onResponse(ex: PolicyExchange, res: UpstreamResponse): void {
    const target = this.#policy.config.onStatuses.has(res.statusCode) ? this.#retryTarget(ex) : undefined
    if (!target) return this.#downstream.onResponse(ex, res)
    ex.discard(res)
    this.#retry(ex, target, res.statusCode)
  }

  onError(ex: PolicyExchange, error: Error): void {
    const { config } = this.#policy
    const retryable = (config.onConnectError && isConnectError(error)) || (config.onTimeout && isResponseTimeout(error))
    // Refused before a connection existed: the upstream saw nothing, so even a POST with its body goes again.
    const target = retryable ? this.#retryTarget(ex, isNothingSent(error) && ex.bodyUntouched()) : undefined
    if (!target) return this.#downstream.onError(ex, error)
    this.#retry(ex, target, error.message)
  }

  #retryTarget(ex: PolicyExchange, nothingSent = false): Instance | undefined {
    const { config, budget } = this.#policy
    if (ex.clientGone || ex.attempt >= config.attempts || Date.now() >= this.#deadline || !(nothingSent || isReplayable(ex.request, config.methods))) return undefined
    const target = ex.pickAnother(this.#tried)
    if (!target || this.#tried.has(target.id)) return undefined
    if (!budget.tryRetry()) return void this.#policy.events.count(RETRIES, this.#policy.route.name, 'budget_exhausted')
    return target
  }

  #retry(ex: PolicyExchange, target: Instance, outcome: number | string): void {
    this.#policy.events.count(RETRIES, this.#policy.route.name, 'retried')
    this.#policy.logger.info({ route: this.#policy.route.name, requestId: ex.request.id, instance: ex.instance.origin, next: target.origin, attempt: ex.attempt, outcome }, 'retrying on another instance')
    if (ex.attempt === 1) ex.onEnd(() => clearTimeout(this.#backoff)) // a gone client stops the retry here
    this.#backoff = setTimeout(() => this.#send(ex, target), backoffDelay(ex.attempt - 1, { baseMs: this.#policy.config.backoffMs, capMs: 1_000 }))
  }

  #send(ex: PolicyExchange, target: Instance): void {
    this.#backoff = undefined
    if (ex.clientGone) return
    this.#tried.add(target.id)
    ex.switchTo(target)
    ex.timeoutMs = this.timeLeft()
    this.#next(ex, this)
  }
}

/** Only a request without a body can be sent again: a streamed body is gone once the first attempt read it. */
function isReplayable(request: PolicyRequest, methods: ReadonlySet<string>): boolean {
  const length = request.headers['content-length']
  return methods.has(request.method) && (length === undefined || length === '0') && request.headers['transfer-encoding'] === undefined
}
