import { Ajv, type ErrorObject } from 'ajv'
import { LineCounter, parseDocument, isAlias, isMap, isScalar, visit, type Document, type Node } from 'yaml'
import type { LoadBalancerKind } from '../balancer/balancer.js'
import { parseRequestKey, type RequestKey } from '../balancer/request-key.js'
import { toUpstreamSource, type UpstreamSource } from '../balancer/upstream-schema.js'
import { parseDuration } from '../kernel/duration.js'
import { POLICIES } from '../policies/index.js'
import { schemaDefaults } from '../kernel/schema-defaults.js'
import { toConsumerDefinition, type ConsumerDefinition, type ConsumerSpec } from '../policies/consumers.js'
import { ambiguous, conditionCount } from './route-table.js'
import { RouteFileSchema, RouteSchema, TimeoutSchema, WebSocketSchema, type RouteFileSpec, type RouteSpec } from './route-schema.js'

/** Where one target's instances come from. */
export type RouteTarget = UpstreamSource

/** One target of a route: the route's only one, or a side of its `split`. */
export interface TargetDefinition {
  /** The split's name for it (metrics' `target`, the access log); empty on a route without a split. */
  readonly name: string
  readonly weight: number
  readonly upstream: RouteTarget
}

/** Whom a split keeps on one target: a request key, or the consumer auth established. */
export type StickyKey = RequestKey | { readonly kind: 'consumer' }

/** A validated route with its defaults applied: what the route table is built from. */
export interface RouteDefinition {
  readonly name: string
  readonly prefix: string
  readonly rewritePrefix: string | undefined
  /** One target (`upstreams` or `service`), or the targets of a `split`. */
  readonly targets: readonly TargetDefinition[]
  /** Set on a route with `split`: what keeps a client on one target (undefined: drawn at random by weight). */
  readonly split: { readonly stickyOn: StickyKey | undefined } | undefined
  readonly methods: ReadonlySet<string> | undefined
  /** Lower case; `*.example.org` takes one label in front. */
  readonly hosts: readonly string[] | undefined
  /** Lower-case names, the values the request must carry. */
  readonly headers: ReadonlyMap<string, string> | undefined
  readonly timeout: { readonly connectMs: number; readonly responseMs: number }
  readonly loadBalancer: LoadBalancerKind
  readonly hashOn: RequestKey
  /** false: upgrades are refused. */
  readonly websocket: false | WebSocketLimits
  readonly preserveHost: boolean
  /** Each policy's config (its defaults applied) under its route-file key, in the order of POLICIES. */
  readonly policies: ReadonlyMap<string, unknown>
  /** Where the route was defined, for messages and the admin API. */
  readonly source: { readonly file: string; readonly line: number }
}

/** One problem in one file, printed as `file:line: message`. */
export interface RouteFileError {
  readonly file: string
  readonly line: number
  readonly message: string
}

/** `file:line: message`, with control characters from the file shown escaped, never sent to a terminal as they are. */
export const formatRouteFileError = (e: RouteFileError): string => `${e.file}:${e.line}: ${e.message}`.replace(CONTROL_CHARACTERS, escapeControl)

const CONTROL_CHARACTERS = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f]/g
const escapeControl = (c: string): string => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`

const DEFAULTS = schemaDefaults(RouteSchema, ['loadBalancer', 'hashOn', 'preserveHost'])
const TIMEOUT_DEFAULTS = schemaDefaults(TimeoutSchema, ['connect', 'response'])
const WEBSOCKET_DEFAULTS = schemaDefaults(WebSocketSchema, ['maxTunnels', 'maxTunnelsPerClient'])

const ajv = new Ajv({ allErrors: true, verbose: true, strict: true })
ajv.addKeyword({ keyword: 'patternMessage', schemaType: 'string' })
const validateRouteFile = ajv.compile<RouteFileSpec>(RouteFileSchema)

/**
 * Bounds on one route file, so that no file an operator (or a fuzzer) can write takes the gateway's memory or time.
 * A real route file is a few kilobytes with a handful of anchors.
 */
export const ROUTE_FILE_LIMITS = {
  /** Bytes of text; larger files are refused unread. */
  bytes: 1024 * 1024,
  /** YAML nodes (every scalar, list and map). */
  nodes: 200_000,
  /** Anchors plus aliases: yaml resolves each alias by scanning them all. */
  anchorsAndAliases: 1_000,
  /** How many times the data behind aliases may be copied out (yaml's guard against alias bombs). */
  aliasExpansion: 100,
} as const

/** A file with more problems than this is reported by its first ones: the log and the admin API stay readable. */
export const MAX_ERRORS_PER_FILE = 20

function atMost(count: number, errors: readonly RouteFileError[]): RouteFileError[] {
  const last = errors[count - 1] as RouteFileError
  return [...errors.slice(0, count - 1), { ...last, message: `${last.message} (and ${errors.length - count} more problems in this file)` }]
}

/**
 * Parses and validates one route file. Pure: text in, routes or errors out. A file with any error yields no routes,
 * so that a half-valid edit never goes live. Never throws: whatever the text, the answer is routes or
 * `file:line: message` errors.
 */
export function parseRouteFile(file: string, text: string): ParsedRouteFile {
  try {
    const parsed = parseBoundedRouteFile(file, text)
    return parsed.errors.length <= MAX_ERRORS_PER_FILE ? parsed : refused(atMost(MAX_ERRORS_PER_FILE, parsed.errors))
  } catch (error) {
    // A YAML or validation corner nobody foresaw: the file is refused, the gateway lives on.
    return refused([{ file, line: 1, message: `cannot be read as a route file: ${firstLine(error instanceof Error ? error.message : String(error))}` }])
  }
}

/** What one file of the routes directory defines: routes, consumers (a consumers file), or both; or why it cannot be used. */
export interface ParsedRouteFile {
  readonly routes: readonly RouteDefinition[]
  readonly consumers: readonly ConsumerDefinition[]
  readonly errors: readonly RouteFileError[]
}

/** A file refused: it defines nothing. */
export const refused = (errors: readonly RouteFileError[]): ParsedRouteFile => ({ routes: [], consumers: [], errors })

function parseBoundedRouteFile(file: string, text: string): ParsedRouteFile {
  const fail = refused
  const size = Buffer.byteLength(text)
  if (size > ROUTE_FILE_LIMITS.bytes) {
    return fail([{ file, line: 1, message: `file is ${size} bytes; a route file may be at most ${ROUTE_FILE_LIMITS.bytes} bytes (split it into several files)` }])
  }
  const lineCounter = new LineCounter()
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true })
  const lineAt = (offset: number): number => lineCounter.linePos(offset).line

  if (doc.errors.length > 0) {
    return fail(doc.errors.map((e) => ({ file, line: lineAt(e.pos[0]), message: firstLine(e.message) })))
  }
  const structureErrors = aliasAndSizeErrors(doc, lineAt)
  if (structureErrors.length > 0) return fail(structureErrors.map((e) => ({ file, ...e })))
  let data: unknown
  try {
    data = doc.toJS({ maxAliasCount: ROUTE_FILE_LIMITS.aliasExpansion })
  } catch (error) {
    const message = (error as Error).message
    return fail([{ file, line: 1, message: /excessive alias count/i.test(message) ? `aliases expand to more than ${ROUTE_FILE_LIMITS.aliasExpansion} copies of their data` : firstLine(message) }])
  }
  if (data === null || data === undefined) return fail([{ file, line: 1, message: 'file is empty: expected a top-level "routes:" list (or "consumers:")' }])
  if (!validateRouteFile(data)) {
    return fail(sortByLine((validateRouteFile.errors ?? []).filter(isUseful).map((e) => schemaError(file, doc, lineAt, e))))
  }
  if (data.routes === undefined && data.consumers === undefined) return fail([{ file, line: 1, message: 'expected a top-level "routes:" list (or "consumers:")' }])

  const errors: RouteFileError[] = []
  const routes: RouteDefinition[] = []
  const seenNames = new Map<string, number>()
  ;(data.routes ?? []).forEach((spec, index) => {
    const line = lineOf(doc, lineAt, ['routes', index])
    const routeErrors = crossFieldErrors(spec).map((message) => ({ file, line, message: `route "${spec.name}": ${message}` }))
    const definition = routeErrors.length === 0 ? toDefinition(spec, { file, line }) : undefined
    const nameLine = seenNames.get(spec.name)
    if (nameLine !== undefined) routeErrors.push({ file, line, message: `route name "${spec.name}" is already used at line ${nameLine}` })
    seenNames.set(spec.name, line)
    const rival = definition && routes.find((r) => ambiguous(r, definition))
    if (definition && rival) routeErrors.push({ file, line, message: overlapMessage(definition, rival, `line ${rival.source.line}`) })
    errors.push(...routeErrors)
    if (definition && routeErrors.length === 0) routes.push(definition)
  })
  const consumers = parseConsumers(data.consumers ?? [], (index) => lineOf(doc, lineAt, ['consumers', index]), file, errors)
  return errors.length > 0 ? fail(errors) : { routes, consumers, errors: [] }
}

/** The file's consumers, their defaults applied; problems go to `errors`. */
function parseConsumers(specs: readonly ConsumerSpec[], lineAt: (index: number) => number, file: string, errors: RouteFileError[]): ConsumerDefinition[] {
  const seenNames = new Map<string, number>()
  const seenKeys = new Map<string, string>()
  return specs.flatMap((spec, index): ConsumerDefinition[] => {
    const line = lineAt(index)
    const problems: string[] = []
    const nameLine = seenNames.get(spec.name)
    if (nameLine !== undefined) problems.push(`consumer name "${spec.name}" is already used at line ${nameLine}`)
    seenNames.set(spec.name, line)
    const consumer = toConsumerDefinition(spec, { file, line })
    if (typeof consumer === 'string') problems.push(consumer)
    else
      for (const hash of consumer.apiKeys) {
        const holder = seenKeys.get(hash)
        if (holder !== undefined) problems.push(`consumer "${spec.name}": key sha256:${hash.slice(0, 12)}… is also a key of "${holder}"`)
        seenKeys.set(hash, spec.name)
      }
    errors.push(...problems.map((message) => ({ file, line, message })))
    return problems.length > 0 || typeof consumer === 'string' ? [] : [consumer]
  })
}

/** Why `route` cannot join a table that has `rival` (see `ambiguous`), naming where the rival is. */
export function overlapMessage(route: RouteDefinition, rival: RouteDefinition, where: string): string {
  if (conditionCount(route) === 0) return `prefix "${route.prefix}" is already routed${rival.name === route.name ? '' : ` by "${rival.name}"`} at ${where}`
  return `route "${route.name}" could take the same requests as "${rival.name}" at ${where} (prefix "${route.prefix}", as many hosts/headers/methods conditions): tell them apart with a host, a header or a method`
}

function crossFieldErrors(spec: RouteSpec): string[] {
  const errors: string[] = []
  if ([spec.upstreams, spec.service, spec.split].filter((given) => given !== undefined).length !== 1) {
    errors.push('needs exactly one of "upstreams" (a list of URLs), "service" (a Consul service name) and "split" (weighted targets)')
  }
  if (spec.stickyOn !== undefined && spec.split === undefined) errors.push('"stickyOn" only applies with "split"')
  if (spec.split !== undefined) errors.push(...splitErrors(spec.split))
  if (spec.hashOn !== undefined && spec.loadBalancer !== 'consistent-hash') {
    errors.push('"hashOn" only applies with "loadBalancer: consistent-hash"')
  }
  for (const config of policyConfigs(spec).values()) if (typeof config === 'string') errors.push(config)
  return errors
}

function splitErrors(targets: NonNullable<RouteSpec['split']>): string[] {
  const errors: string[] = []
  const names = new Set<string>()
  targets.forEach((target, index) => {
    const where = `split[${index}]`
    if ((target.upstreams === undefined) === (target.service === undefined)) errors.push(`${where}: needs exactly one of "upstreams" and "service"`)
    const name = target.name ?? target.service
    if (name === undefined) errors.push(`${where}: needs a "name" (a target with "upstreams" has no service to be named after)`)
    else if (names.has(name)) errors.push(`${where}: the target name "${name}" is used twice (give each target its own "name")`)
    else names.add(name)
  })
  if (targets.every((target) => target.weight === 0)) errors.push('split: every weight is 0; at least one target needs a share')
  return errors
}

/** Each policy the route sets, by key, with its defaults applied (or the sentence that refuses it). */
function policyConfigs(spec: RouteSpec): Map<string, unknown> {
  const configs = new Map<string, unknown>()
  const specs = spec as Readonly<Record<string, unknown>>
  for (const policy of POLICIES) if (specs[policy.key] !== undefined) configs.set(policy.key, policy.toConfig(specs[policy.key]))
  return configs
}

function toDefinition(spec: RouteSpec, source: { file: string; line: number }): RouteDefinition {
  return {
    name: spec.name,
    prefix: spec.prefix,
    rewritePrefix: spec.rewritePrefix,
    targets: spec.split?.map((target) => ({ name: target.name ?? target.service ?? '', weight: target.weight, upstream: toUpstreamSource(target) })) ?? [{ name: '', weight: 1, upstream: toUpstreamSource(spec) }],
    split: spec.split && { stickyOn: spec.stickyOn === undefined ? undefined : spec.stickyOn === 'consumer' ? { kind: 'consumer' } : parseRequestKey(spec.stickyOn) },
    methods: spec.methods && new Set(spec.methods),
    hosts: spec.hosts?.map((h) => h.toLowerCase()),
    headers: spec.headers && new Map(Object.entries(spec.headers).map(([name, value]) => [name.toLowerCase(), value])),
    timeout: {
      connectMs: parseDuration(spec.timeout?.connect ?? TIMEOUT_DEFAULTS.connect),
      responseMs: parseDuration(spec.timeout?.response ?? TIMEOUT_DEFAULTS.response),
    },
    loadBalancer: spec.loadBalancer ?? DEFAULTS.loadBalancer,
    hashOn: parseRequestKey(spec.hashOn ?? DEFAULTS.hashOn),
    websocket: webSocketLimits(spec.websocket),
    preserveHost: spec.preserveHost ?? DEFAULTS.preserveHost,
    policies: policyConfigs(spec),
    source,
  }
}

export interface WebSocketLimits {
  readonly maxTunnels: number
  readonly maxTunnelsPerClient: number
}

function webSocketLimits(spec: RouteSpec['websocket']): false | WebSocketLimits {
  if (spec === undefined || spec === false) return false
  const given = spec === true ? {} : spec
  return { maxTunnels: given.maxTunnels ?? WEBSOCKET_DEFAULTS.maxTunnels, maxTunnelsPerClient: given.maxTunnelsPerClient ?? WEBSOCKET_DEFAULTS.maxTunnelsPerClient }
}

// anyOf/union branches repeat what their members already said; the member errors are the useful ones.
const isUseful = (e: ErrorObject): boolean => e.keyword !== 'anyOf'

function schemaError(file: string, doc: Document, lineAt: (offset: number) => number, e: ErrorObject): RouteFileError {
  const path = e.instancePath.split('/').slice(1).map((p) => (/^\d+$/.test(p) ? Number(p) : p.replaceAll('~1', '/').replaceAll('~0', '~')))
  const where = describePath(path)
  const prefix = where === '' ? '' : `${where}: `
  switch (e.keyword) {
    case 'additionalProperties': {
      const key = String(e.params.additionalProperty)
      const parent = e.parentSchema as { properties?: object; patternProperties?: object }
      // A map of names (headers): the key is not a name of the kind it takes.
      if (parent.properties === undefined && parent.patternProperties !== undefined) return { file, line: keyLine(doc, lineAt, path, key), message: `${prefix}"${key}" is not a header name` }
      const allowed = Object.keys(parent.properties ?? {})
      const hint = closest(key, allowed)
      return {
        file,
        line: keyLine(doc, lineAt, path, key),
        message: `${prefix}unknown key "${key}"${hint ? ` (did you mean "${hint}"?)` : ''}; allowed: ${allowed.join(', ')}`,
      }
    }
    case 'required':
      return { file, line: lineOf(doc, lineAt, path), message: `${prefix}missing required key "${String(e.params.missingProperty)}"` }
    case 'pattern': {
      const custom = (e.parentSchema as { patternMessage?: string }).patternMessage
      return { file, line: lineOf(doc, lineAt, path), message: `${prefix}${JSON.stringify(e.data)} ${custom ?? e.message ?? 'is invalid'}` }
    }
    case 'const': {
      const allowed = ((e.parentSchema as { const?: unknown }).const)
      return { file, line: lineOf(doc, lineAt, path), message: `${prefix}${JSON.stringify(e.data)} is not allowed (expected ${JSON.stringify(allowed)})` }
    }
    default:
      return { file, line: lineOf(doc, lineAt, path), message: `${prefix}${e.message ?? 'is invalid'}` }
  }
}

/** Union members each report a `const` mismatch; one line listing the choices reads better. */
function sortByLine(errors: RouteFileError[]): RouteFileError[] {
  const merged = new Map<string, RouteFileError>()
  for (const e of errors) {
    const unionChoice = /^(.*?): (".*?") is not allowed \(expected (".*?")\)$/.exec(e.message)
    if (unionChoice) {
      const key = `${e.line}:${unionChoice[1]}`
      const previous = merged.get(key)
      const choices = previous ? `${previous.message.replace(/^.*one of /, '')}, ${unionChoice[3]}` : unionChoice[3]
      merged.set(key, { ...e, message: `${unionChoice[1]}: ${unionChoice[2]} must be one of ${choices}` })
    } else {
      merged.set(`${merged.size}:${e.message}`, e)
    }
  }
  return [...merged.values()].sort((a, b) => a.line - b.line)
}

function describePath(path: (string | number)[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? p : `.${p}`)).join('')
}

function lineOf(doc: Document, lineAt: (offset: number) => number, path: (string | number)[]): number {
  for (let depth = path.length; depth >= 0; depth--) {
    const node = doc.getIn(path.slice(0, depth), true) as Node | undefined
    if (node?.range) return lineAt(node.range[0])
  }
  return 1
}

function keyLine(doc: Document, lineAt: (offset: number) => number, path: (string | number)[], key: string): number {
  const map = path.length === 0 ? doc.contents : doc.getIn(path, true)
  if (isMap(map)) {
    const pair = map.items.find((item) => isScalar(item.key) && item.key.value === key)
    if (pair && isScalar(pair.key) && pair.key.range) return lineAt(pair.key.range[0])
  }
  return lineOf(doc, lineAt, path)
}

/**
 * What yaml would only find while converting, or not at all: an alias with no anchor before it, an alias inside the
 * node it refers to (a cycle), and more nodes or anchors than any route file needs. One pass in document order.
 */
function aliasAndSizeErrors(doc: Document, lineAt: (offset: number) => number): { line: number; message: string }[] {
  const errors: { line: number; message: string }[] = []
  const anchors = new Map<string, unknown>()
  let nodes = 0
  let anchorsAndAliases = 0
  const lineOfNode = (node: { range?: [number, number, number] | null }) => (node.range ? lineAt(node.range[0]) : 1)
  visit(doc, (_key, node, path) => {
    if (node === null) return undefined // an empty document
    if (++nodes > ROUTE_FILE_LIMITS.nodes) {
      errors.push({ line: lineOfNode(node as Node), message: `more than ${ROUTE_FILE_LIMITS.nodes} values in one file` })
      return visit.BREAK
    }
    const anchor = (node as { anchor?: string }).anchor
    if (anchor === undefined && !isAlias(node)) return undefined
    if (++anchorsAndAliases > ROUTE_FILE_LIMITS.anchorsAndAliases) {
      errors.push({ line: lineOfNode(node as Node), message: `more than ${ROUTE_FILE_LIMITS.anchorsAndAliases} anchors and aliases in one file` })
      return visit.BREAK
    }
    if (anchor !== undefined) anchors.set(anchor, node)
    if (isAlias(node)) {
      const target = anchors.get(node.source)
      if (target === undefined) errors.push({ line: lineOfNode(node), message: `alias "*${node.source}" has no anchor "&${node.source}" above it` })
      else if (path.includes(target as never)) errors.push({ line: lineOfNode(node), message: `alias "*${node.source}" is inside the value it refers to` })
    }
    return undefined
  })
  return errors
}

function firstLine(message: string): string {
  return message.split('\n')[0]?.replace(/ at line \d+, column \d+:?$/, '') ?? message
}

/** The allowed key an operator most likely meant, by edit distance; none when nothing is close. */
function closest(key: string, candidates: string[]): string | undefined {
  let best: { name: string; distance: number } | undefined
  for (const name of candidates) {
    const distance = editDistance(key.toLowerCase(), name.toLowerCase())
    if (distance <= 2 && (!best || distance < best.distance)) best = { name, distance }
  }
  return best?.name
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const current = [i]
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
    previous = current
  }
  return previous[b.length] ?? 0
}
