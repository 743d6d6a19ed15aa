import { createBalancer, type InFlight } from '../balancer/balancer.js'
import { staticInstance, type Instance, type ServiceInstances } from '../balancer/instance.js'
import { chooseSplitTarget } from '../balancer/split.js'
import type { UpstreamSource } from '../balancer/upstream-schema.js'
import type { RouteDefinition, TargetDefinition } from '../config/parse-route-file.js'
import { readCallerKey } from '../policies/caller-key.js'
import { PolicyCounter, type PolicyEvents } from '../policies/policy-events.js'
import { RequestValue, type AnyPolicyKind, type AttemptWrapper, type CounterChart, type PolicyExchange, type RequestGuard, type Send } from '../policies/policy.js'
import type { KeyedPolicy, RouteWithPolicies } from '../policies/policy-registry.js'
import type { OperatorOverrides } from '../state/operator-overrides.js'
import type { Exchange, LiveRoute, LiveTarget } from './exchange.js'
import { replyOptionsFor, sendViaReplyFrom } from './send.js'

/** The split target a request went to, in its access log line and on its span. */
export const SPLIT_TARGET = new RequestValue<string>('split.target', { logField: 'target', spanAttribute: 'portico.split.target' })

export const SPLIT_REQUESTS = new PolicyCounter('portico_split_requests_total', 'Requests of a split route by the target they went to.', 'target')
/** The status page's chart of each target's share of a split route. */
export const SPLIT_CHART: CounterChart = { counter: SPLIT_REQUESTS, title: 'Split: share by target', as: 'shares', series: (target) => target }

/** What compiling a route needs of its gateway. */
export interface RouteParts {
  readonly discovery: ServiceInstances | undefined
  readonly inFlight: InFlight
  readonly overrides: OperatorOverrides
  readonly events: PolicyEvents
  /** Requests under way, by route name: one object per name, kept across reloads. */
  readonly activeOf: (route: string) => { count: number }
}

/**
 * What the policy registry builds for a route: the route itself with every policy; for a split, the route with its
 * route-wide policies, and each target (`<route>/<target>`, a name no route can have) with the per-target ones.
 */
export function policyHolders(definition: RouteDefinition, kinds: readonly AnyPolicyKind[]): RouteWithPolicies[] {
  if (definition.split === undefined) return [definition]
  const perTarget = new Set(kinds.filter((kind) => kind.perTarget).map((kind) => kind.key))
  const only = (keep: (key: string) => boolean) => new Map([...definition.policies].filter(([key]) => keep(key)))
  return [
    { ...definition, policies: only((key) => !perTarget.has(key)) },
    ...definition.targets.map((target) => ({ name: targetPolicyName(definition, target), methods: definition.methods, timeout: definition.timeout, policies: only((key) => perTarget.has(key)) })),
  ]
}

const targetPolicyName = (route: RouteDefinition, target: TargetDefinition): string => `${route.name}/${target.name}`

/** The Consul services a route sends to: its targets', and those its policies name (a mirror's). */
export function servicesOf(definition: RouteDefinition, kinds: readonly AnyPolicyKind[]): string[] {
  const own = definition.targets.flatMap(({ upstream }) => (upstream.kind === 'service' ? [upstream.service] : []))
  const named = kinds.flatMap((kind) => (kind.services && definition.policies.has(kind.key) ? kind.services(definition.policies.get(kind.key)) : []))
  return [...own, ...named]
}

/**
 * A route as requests use it, built once per table: its guards in order, its attempt wrappers folded around the plain
 * send (undici's compose: the first policy outermost), and its target, or a split's targets each with its own
 * balancer, instances and per-target policies folded inside the route's.
 */
export function compileRoute(definition: RouteDefinition, policiesOf: (name: string) => readonly KeyedPolicy[], parts: RouteParts): LiveRoute {
  const policies = policiesOf(definition.name)
  const split = definition.split
  const targets = definition.targets.map((target) => compileTarget(definition, target, split === undefined ? policies : policiesOf(targetPolicyName(definition, target)), parts))
  const guards = policies.flatMap(({ policy }) => (policy.guard ? [policy.guard] : [])) as RequestGuard[]
  const answered = policies.flatMap(({ policy }) => policy.answersMethods ?? [])
  const only = targets.length === 1 ? (targets[0] as LiveTarget) : undefined
  return {
    ...definition,
    methods: definition.methods && answered.length > 0 ? new Set([...definition.methods, ...answered]) : definition.methods,
    targets,
    chooseTarget: split === undefined ? null : splitChooser(definition.name, targets, split.stickyOn, parts.events),
    instances: only ? only.instances : () => targets.flatMap((target) => target.instances()),
    discovered: only ? only.discovered : () => targets.flatMap((target) => target.discovered()),
    guards: guards.length > 0 ? guards : null,
    send: folded(policies, split === undefined ? sendViaReplyFrom : sendToTarget),
    replyOptions: replyOptionsFor(definition.timeout.responseMs),
    livePolicies: policies,
    active: parts.activeOf(definition.name),
  }
}

function compileTarget(definition: RouteDefinition, target: TargetDefinition, policies: readonly KeyedPolicy[], parts: RouteParts): LiveTarget {
  const { overrides } = parts
  // An operator's ejections come first: what policies filter starts from the instances in rotation.
  const filters = [(instances: readonly Instance[]) => overrides.admitted(definition.name, instances), ...policies.flatMap(({ policy }) => (policy.filterInstances ? [policy.filterInstances] : []))]
  const refusing = policies.flatMap(({ policy }) => (policy.refusesAll ? [policy.refusesAll.bind(policy)] : []))
  const discovered = instancesOf(target.upstream, parts.discovery)
  const instances = (): readonly Instance[] => filters.reduce((kept, filter) => filter(kept), discovered())
  const own = definition.split === undefined ? [] : policies
  return {
    ...target,
    pick: createBalancer(definition.loadBalancer, { inFlight: parts.inFlight }),
    instances,
    discovered,
    send: folded(own, sendViaReplyFrom),
    inFlight: definition.loadBalancer === 'least-request' ? parts.inFlight : undefined,
    livePolicies: own,
    available: () => instances().length > 0 && !refusing.some((refuses) => refuses()),
  }
}

function folded(policies: readonly KeyedPolicy[], send: Send): Send {
  const wrappers = policies.flatMap(({ policy }) => (policy.wrap ? [policy.wrap] : [])) as AttemptWrapper[]
  return wrappers.reduceRight<Send>((next, wrap) => wrap(next), send)
}

/** The end of a split route's own wrappers: its chosen target's wrappers and the send. */
function sendToTarget(ex: PolicyExchange, handler: Parameters<Send>[1]): void {
  ;(ex as Exchange).target.send(ex, handler)
}

function splitChooser(route: string, targets: readonly LiveTarget[], stickyOn: NonNullable<RouteDefinition['split']>['stickyOn'], events: PolicyEvents): (ex: PolicyExchange) => LiveTarget {
  return function chooseTarget(ex) {
    const target = chooseSplitTarget(targets, stickyOn === undefined ? undefined : readCallerKey(stickyOn, ex))
    ex.set(SPLIT_TARGET, target.name)
    events.count(SPLIT_REQUESTS, route, target.name)
    return target
  }
}

/** The instances of a source as they are now: static ones fixed, a service's as discovery sees them (none without it). */
export function instancesOf(source: UpstreamSource, discovery: ServiceInstances | undefined): () => readonly Instance[] {
  if (source.kind === 'static') {
    const fixed = Object.freeze(source.upstreams.map(staticInstance))
    return () => fixed
  }
  if (!discovery) return () => []
  return () => discovery.instances(source.service)
}

/** Each policy's view of itself under its route-file key, for the admin API; a split's targets' under their names. */
export function describePolicies(route: LiveRoute): Record<string, unknown> {
  const described = (policies: readonly KeyedPolicy[]) => Object.fromEntries(policies.map(({ key, policy }) => [key, policy.describe?.() ?? {}]))
  const own = described(route.livePolicies)
  return route.split === undefined ? own : { ...own, targets: Object.fromEntries(route.targets.map((target) => [target.name, described(target.livePolicies)])) }
}
