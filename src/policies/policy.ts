import type { TSchema } from '@sinclair/typebox'
import type { IncomingHttpHeaders } from 'node:http'
import type { Readable } from 'node:stream'
import type { Instance } from '../balancer/instance.js'
import type { UpstreamSource } from '../balancer/upstream-schema.js'
import type { KeyedRequest } from '../balancer/request-key.js'
import type { ComponentHealth } from '../kernel/health.js'
import type { Logger } from '../kernel/logger.js'
import type { OperatorOverrides } from '../state/operator-overrides.js'
import type { SharedState } from '../state/shared-state.js'
import type { LiveConsumers } from './consumers.js'
import type { PolicyCounter, PolicyEvents } from './policy-events.js'

/**
 * A per-request value that one policy declares and sets on the exchange, and later ones (or the access log and the
 * request's span, when `shown` names where) read: the consumer an auth guard establishes, what a policy decided. Typed
 * by its declaration (Hono's `c.set`/`c.get`); no header is re-parsed downstream.
 */
export class RequestValue<T extends string | number | boolean> {
  /** Every value declared, in declaration order: what the access log and the span may show. */
  static readonly declared: RequestValue<string | number | boolean>[] = []
  /** Its slot on an exchange. */
  readonly slot: number
  declare readonly _type: T

  constructor(
    readonly name: string,
    /** `logField`: the access log line's field; `spanAttribute`: the request span's attribute. */
    readonly shown: { readonly logField?: string; readonly spanAttribute?: string } = {},
  ) {
    this.slot = RequestValue.declared.length
    RequestValue.declared.push(this as unknown as RequestValue<string | number | boolean>)
  }
}

/** An upstream's answer as reply-from hands it over: status and headers already copied onto the reply. */
export interface UpstreamResponse {
  readonly statusCode: number
  readonly headers: IncomingHttpHeaders
  /** Its body, still arriving (reply-from's name for it; not a node stream, see UpstreamBody). */
  readonly stream: UpstreamBody
}

/**
 * An upstream answer's body as it arrives off the connection: each chunk goes to the one sink it is handed to, with no
 * stream machinery between (undici's `request()` made a Readable per answer, with its pipe's listeners and ticks).
 * Whoever takes an answer either hands its body on (to the next handler, or to a sink) or gives it up with `destroy`.
 */
export interface UpstreamBody {
  /** From now on its chunks, then its end or failure, go to `sink`; what arrived before is handed over first. */
  pipeTo(sink: BodySink): void
  /** No more chunks until `resume`: the upstream's connection is left unread meanwhile. */
  pause(): void
  resume(): void
  /** Gives it up: an upstream request not yet done is cancelled (its connection closed); its sink hears nothing more. */
  destroy(): void
}

/** Where a body's chunks go. Called inside the connection's parser: nothing here may throw or wait. */
export interface BodySink {
  data(chunk: Buffer): void
  end(): void
  /** The body broke off (a reset, a length mismatch, a body timeout): what was handed on is not the whole of it. */
  error(error: Error): void
}

/** The client's request as a policy reads it (the framework's request is one; policies never reach the framework). */
export interface PolicyRequest extends KeyedRequest {
  readonly id: string
  readonly method: string
  /** The path and query as the client sent them. */
  readonly url: string
  readonly headers: IncomingHttpHeaders
}

/** The answer under way, as a policy may shape it or give it itself. */
export interface PolicyReply {
  /** Whether the answer has gone out. */
  readonly sent: boolean
  code(statusCode: number): PolicyReply
  header(name: string, value: string | number | string[]): PolicyReply
  headers(values: Readonly<Record<string, string | number | string[]>>): PolicyReply
  removeHeader(name: string): PolicyReply
  /** The headers set on the answer so far (the gateway's own, and the upstream's once it answered). */
  getHeaders(): Record<string, number | string | string[] | undefined>
  /** Answers with `body` (none for an empty answer). */
  send(body?: Buffer | string): PolicyReply
}

/**
 * What a policy sees of one request. The proxy's Exchange implements it: one object per request, of fixed shape.
 * Policies keep their per-request state in their own handler objects, never on the exchange.
 */
export interface PolicyExchange {
  readonly request: PolicyRequest
  readonly reply: PolicyReply
  /** The path sent upstream (normalised, prefix rewritten), without the query. */
  readonly upstreamPath: string
  /** The same with the query (the client's, as a guard left it): what the request asks of its route. */
  readonly upstreamUrl: string
  /** Replaces the query sent upstream (without its `?`; empty or undefined: none), e.g. to take a credential out of it. */
  setUpstreamQuery(query: string | undefined): void
  /** A credential in the client's URL (its text as sent): the access log line and the request's span show `[redacted]` instead. */
  redact(secret: string): void
  /** The instance of the attempt under way (or about to be made). */
  readonly instance: Instance
  /** Attempts made so far, this one included. */
  readonly attempt: number
  /** The client went away: nothing more may be sent upstream for this request. */
  readonly clientGone: boolean
  /** How long the attempt under way may wait for its answer; sent upstream as X-Portico-Timeout-Ms. */
  timeoutMs: number
  /**
   * The request's headers as the gateway sends them upstream: the client's claims dropped, X-Forwarded-* derived, Host
   * the client's (the instance's own Host and the attempt's headers left out). What can change an answer is here, not in
   * `request.headers`. Made on the first call; treat it as read-only.
   */
  forwardedHeaders(): IncomingHttpHeaders
  /**
   * Sets a header of the request as the gateway sends it upstream (every attempt, a WebSocket handshake too), or
   * removes it with `undefined`; applied after the forwarding headers, so the client's header of that name never
   * passes. Not for Host, Content-Length or hop-by-hop headers: a policy's schema refuses those.
   */
  setUpstreamHeader(name: string, value: string | undefined): void
  /** What policies set with `setUpstreamHeader`, by lower-case name (undefined: removed); what a cache keys on. */
  readonly upstreamHeaderChanges: ReadonlyMap<string, string | undefined> | undefined
  /** This request's value of `key`, if a policy set one. */
  get<T extends string | number | boolean>(key: RequestValue<T>): T | undefined
  set<T extends string | number | boolean>(key: RequestValue<T>, value: T): void
  /** Another instance for a retry, none of `tried` while others are left; undefined when the route has none. */
  pickAnother(tried: ReadonlySet<string>): Instance | undefined
  /** Starts the next attempt's bookkeeping on `instance`: in-flight counts and the upstream abort follow it here. */
  switchTo(instance: Instance): void
  /**
   * Runs `shape` just before the answer's headers go out, whoever gives it (the upstream, a cache hit, the gateway's
   * refusal): the last word on the answer's headers. Once per answer.
   */
  beforeAnswer(shape: () => void): void
  /** Runs `cleanup` once when the request ends, however it ends: answered, failed, or the client gone. */
  onEnd(cleanup: () => void): void
  /** No attempt has begun to send the request's body (or it has none): sending the request again repeats nothing. */
  bodyUntouched(): boolean
  /** Drops an attempt's response that will not reach the client, with the headers already copied from it. */
  discard(res: UpstreamResponse): void
  /**
   * A copy of the client's body as the attempts read it (undefined when the request has none), for a request sent
   * beside them (a mirror). The copy never holds the client back: one that falls behind by more than a bounded buffer
   * is destroyed and says `dropped`; one whose body is never read (the request ended first) is destroyed at the end.
   */
  copyBody(): BodyCopy | undefined
}

/** The client's body as a copy reads it (see PolicyExchange.copyBody). */
export interface BodyCopy extends Readable {
  /** It fell behind and was given up: what it fed got only part of the body. */
  readonly dropped: boolean
}

/** How an upstream attempt ended. Exactly one of the two is called per attempt (undici's dispatch handler, pared down). */
export interface AttemptHandler {
  onResponse(ex: PolicyExchange, res: UpstreamResponse): void
  onError(ex: PolicyExchange, error: Error): void
}

/** Sends one attempt upstream and reports to `handler`. */
export type Send = (ex: PolicyExchange, handler: AttemptHandler) => void

/** An upstream policy: wraps the send of every attempt of a route (undici's interceptors). Composed once per route. */
export type AttemptWrapper = (next: Send) => Send

/**
 * A request policy, run before an instance is picked: calls `next()` to go on, `next(error)` to answer with a gateway
 * error, or answers itself and never calls `next`. Callback style: most requests should need no promise.
 */
export type RequestGuard = (ex: PolicyExchange, next: (error?: Error) => void) => void

/** What a policy knows of its route. */
export interface PolicyRoute {
  readonly name: string
  /** The methods the route's file lists; undefined: every method the gateway proxies. */
  readonly methods?: ReadonlySet<string> | undefined
  readonly timeout: { readonly connectMs: number; readonly responseMs: number }
}

export interface PolicyDeps {
  /** Redis-shared state; without it a policy holds per process, in memory. */
  readonly state: SharedState | undefined
  readonly logger: Logger
  /** Where decisions are counted for the metrics. */
  readonly events: PolicyEvents
  /** What operators forced through the admin API. */
  readonly overrides: OperatorOverrides
  /** The consumers of the table live now (from the consumers files). */
  readonly consumers: LiveConsumers
  /** The instances of a source as they are now (a service's as discovery sees them; see PolicyKind.services). */
  upstreams(source: UpstreamSource): () => readonly Instance[]
}

/** One route's live instance of a policy. Every part is optional: a policy fills the slots it needs. */
export interface RoutePolicy {
  readonly guard?: RequestGuard
  readonly wrap?: AttemptWrapper
  /** Methods its guard answers itself though the route's `methods` leave them out (CORS preflights: OPTIONS). */
  readonly answersMethods?: readonly string[]
  /** Narrows the instances that may get traffic (e.g. without ejected outliers). */
  readonly filterInstances?: (instances: readonly Instance[]) => readonly Instance[]
  /** Whether it refuses every attempt now (an open breaker): a split gives the target's share to the others meanwhile. */
  refusesAll?(): boolean
  /** What the admin API and metrics show of it now. */
  describe?(): Record<string, unknown>
  /** Releases timers and subscriptions; called once the route no longer uses this policy. */
  stop?(): void
}

/** A gauge a policy contributes: each route's value read off its live policy when Prometheus scrapes. */
export interface PolicyGauge<Live> {
  readonly name: string
  readonly help: string
  /** How the primary of `--workers` folds its workers' values (prom-client's aggregators); `sum` when unsaid. */
  readonly aggregator?: 'sum' | 'max' | 'min'
  read(policy: Live): number
}

/** What the status page shows of a policy on one route. */
export interface StatusCell {
  /** The cell's data attribute value, for styles and tests (a state such as `open`). */
  readonly mark: string
  readonly text: string
  /** Shown as a badge of this tone when set; as plain text otherwise. */
  readonly tone?: 'good' | 'warn' | 'bad'
  /** A second, smaller line (who forced it, and why). */
  readonly note?: string
}

/** A policy's column on the status page: the snapshot carries its cells, and the page renders every column alike. */
export interface StatusColumn<Live> {
  readonly title: string
  /** The cell's `data-*` attribute name (lower case, no spaces). */
  readonly attribute: string
  /** The route's cell; `policy` is undefined on a route without the policy. Undefined shows a dash. */
  cell(policy: Live | undefined, route: string, deps: PolicyDeps): StatusCell | undefined
}

/** What an admin action gets of its request: plain values, no HTTP framework. */
export interface AdminActionRequest {
  readonly route: PolicyRoute
  readonly query: Readonly<Record<string, string | undefined>>
  /** The upstream path the route sends a client's `path` to; throws a `bad_request` GatewayError for another route's path. */
  upstreamPathOf(path: string): string
}

/** An operator's action on one route's policy: served on the admin port behind its token, and audited. */
export interface AdminAction<Live> {
  readonly method: 'POST' | 'DELETE'
  /** Under `/admin/`, with `:name` for the route, e.g. `/admin/<policy>/:name`. */
  readonly url: string
  /** The audit log's name for it, e.g. `<policy> purge`. */
  readonly audit: string
  /** What the 404 says of a route without the policy, e.g. `has no <policy>`. */
  readonly missing: string
  /** The answer's JSON, and what the audit entry records beyond route and operator. */
  run(policy: Live, request: AdminActionRequest): Promise<{ readonly answer: Record<string, unknown>; readonly detail?: Record<string, unknown> }>
}

/**
 * A route-file key and everything behind it: its schema, the one place its defaults are applied, its factory, and
 * what it adds to the rest of the gateway (metrics, the status page, admin actions, the primary of `--workers`).
 * Adding a policy is one folder with one of these, plus one line in POLICIES and one in the route schema.
 */
export interface PolicyKind<Spec, Config, Live extends RoutePolicy = RoutePolicy> {
  /** The route-file key, e.g. `rateLimit`. */
  readonly key: string
  readonly schema: TSchema
  /** Spec (as validated by the schema) to config, defaults applied; a string says why the spec cannot be used. */
  toConfig(spec: Spec): Config | string
  create(route: PolicyRoute, config: Config, deps: PolicyDeps): Live
  /**
   * Made once for each target of a route's `split` instead of once for the route, under the name `<route>/<target>`:
   * state about an upstream's health (a breaker, outlier detection) belongs to the target's own instances. Such kinds
   * come last in POLICIES, so their wrappers are the innermost.
   */
  readonly perTarget?: true
  /** The Consul services a config sends to (beside the route's own): the gateway follows them. */
  services?(config: Config): readonly string[]
  /** The counters its decisions feed (through `deps.events`), exported by route and their own label. */
  readonly counters?: readonly PolicyCounter[]
  /** Which of those counters the status page charts over time, and how. */
  readonly charts?: readonly CounterChart[]
  readonly gauges?: readonly PolicyGauge<Live>[]
  readonly column?: StatusColumn<Live>
  readonly adminActions?: readonly AdminAction<Live>[]
  /** Called once in the primary of `--workers`: what it must hold for the host's workers (a cluster-wide counter). */
  holdForHost?(): void
  /** What readiness says of the routes' live policies of this kind (degraded: serving on a fallback, such as a stale key set). */
  health?(policies: readonly Live[]): ComponentHealth
}

/**
 * A policy counter drawn on the status page's route view: its counts per 5 s slot of the traffic history, summed over
 * the fleet. `marks` go on the time axis of every chart (a breaker opening); `series` get a chart of their own, a line
 * per series (auth refusals by reason); `shares` too, each series as its share of the slot's sum (a split's targets).
 */
export interface CounterChart {
  readonly counter: PolicyCounter
  readonly title: string
  readonly as: 'marks' | 'series' | 'shares'
  /** The series an outcome is drawn under, or undefined to leave it out (auth's allowed requests). */
  series(outcome: string): string | undefined
}

// Each kind checks its own Spec and Config; the list of them is heterogeneous.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyPolicyKind = PolicyKind<any, any, any>

/** A config as text that is equal for equal configs, Sets and Maps included: a changed field always tells. */
export function fingerprint(config: unknown): string {
  return JSON.stringify(config, (_key, value: unknown) => (value instanceof Set ? [...(value as Set<unknown>)] : value instanceof Map ? [...(value as Map<unknown, unknown>)] : value))
}
