import type { Instance } from '../../balancer/instance.js'
import { isClientFault } from '../../kernel/upstream-errors.js'
import { PolicyCounter } from '../policy-events.js'
import type { AttemptHandler, AttemptWrapper, PolicyExchange, PolicyKind, UpstreamResponse } from '../policy.js'
import { OutlierDetectionSchema, toOutlierDetectionConfig, type OutlierDetectionConfig, type OutlierDetectionSpec } from './schema.js'

const EJECTIONS = new PolicyCounter('portico_outlier_ejections_total', 'Instances ejected by outlier detection, by route.', 'outcome')

export const outlierDetectionPolicy: PolicyKind<OutlierDetectionSpec, OutlierDetectionConfig> = {
  key: 'outlierDetection',
  schema: OutlierDetectionSchema,
  toConfig: toOutlierDetectionConfig,
  create: (route, config, { events }) => {
    const detector = new OutlierDetector(config, () => events.count(EJECTIONS, route.name, 'ejected'))
    return {
      wrap: outlierRecording(detector),
      filterInstances: (instances) => detector.admitted(instances),
      describe: () => ({ ejected: detector.ejected() }),
    }
  },
  perTarget: true,
  counters: [EJECTIONS],
}

/** Records every attempt's outcome against its instance: a 5xx, connect error or timeout is a failure. */
function outlierRecording(detector: OutlierDetector): AttemptWrapper {
  return (next) =>
    function outlierDetection(ex, handler) {
      next(ex, new RecordedAttempt(detector, handler))
    }
}

class RecordedAttempt implements AttemptHandler {
  constructor(
    readonly detector: OutlierDetector,
    readonly downstream: AttemptHandler,
  ) {}

  onResponse(ex: PolicyExchange, res: UpstreamResponse): void {
    this.detector.record(ex.instance.id, res.statusCode < 500)
    this.downstream.onResponse(ex, res)
  }

  onError(ex: PolicyExchange, error: Error): void {
    if (!isClientFault(error)) this.detector.record(ex.instance.id, false)
    this.downstream.onError(ex, error)
  }
}

interface InstanceRecord {
  consecutiveFailures: number
  ejections: number
  ejectedUntil: number
}

/**
 * Ejects instances that fail repeatedly so that one bad instance does not open the whole route's breaker.
 * Ejection time grows with each ejection of the same instance; at most maxEjectionPercent of instances are out.
 */
export class OutlierDetector {
  readonly #config: OutlierDetectionConfig
  readonly #now: () => number
  readonly #onEject: () => void
  readonly #records = new Map<string, InstanceRecord>()
  /** Instances the route had when last asked: the base of maxEjectionPercent. */
  #instanceCount = 0

  constructor(config: OutlierDetectionConfig, onEject: () => void = () => undefined, now: () => number = Date.now) {
    this.#config = config
    this.#onEject = onEject
    this.#now = now
  }

  record(instanceId: string, succeeded: boolean, instanceCount = this.#instanceCount): void {
    let record = this.#records.get(instanceId)
    if (succeeded) {
      if (record) record.consecutiveFailures = 0
      return
    }
    record ??= { consecutiveFailures: 0, ejections: 0, ejectedUntil: 0 }
    this.#records.set(instanceId, record)
    record.consecutiveFailures++
    const now = this.#now()
    if (record.consecutiveFailures < this.#config.consecutiveFailures || record.ejectedUntil > now) return
    const ejectedNow = [...this.#records.values()].filter((r) => r.ejectedUntil > now).length
    if ((ejectedNow + 1) * 100 > this.#config.maxEjectionPercent * instanceCount) return
    record.ejections++
    record.consecutiveFailures = 0
    record.ejectedUntil = now + this.#config.baseEjectionMs * Math.min(10, 2 ** (record.ejections - 1))
    this.#onEject()
  }

  /** The instances that may get traffic now. */
  admitted(instances: readonly Instance[]): readonly Instance[] {
    this.#instanceCount = instances.length
    const now = this.#now()
    let ejected = false
    for (const instance of instances) if ((this.#records.get(instance.id)?.ejectedUntil ?? 0) > now) ejected = true
    return ejected ? instances.filter((i) => (this.#records.get(i.id)?.ejectedUntil ?? 0) <= now) : instances
  }

  ejected(): string[] {
    const now = this.#now()
    return [...this.#records].filter(([, r]) => r.ejectedUntil > now).map(([id]) => id)
  }
}
