import { Type, type Static } from '@sinclair/typebox'
import { LOAD_BALANCERS } from '../balancer/balancer.js'
import { REQUEST_KEY_COOKIE_PATTERN, REQUEST_KEY_HEADER_PATTERN } from '../balancer/request-key.js'
import { serviceNameSchema, upstreamsSchema } from '../balancer/upstream-schema.js'
import { AuthSchema } from '../policies/auth/schema.js'
import { ConsumerSchema } from '../policies/consumers.js'
import { CorsSchema } from '../policies/cors/schema.js'
import { CircuitBreakerSchema } from '../policies/circuit-breaker/schema.js'
import { ConcurrencyLimitSchema } from '../policies/concurrency-limit/schema.js'
import { MirrorSchema } from '../policies/mirror/schema.js'
import { OutlierDetectionSchema } from '../policies/outlier-detection/schema.js'
import { RateLimitSchema } from '../policies/rate-limit/schema.js'
import { RequestHeadersSchema } from '../policies/request-headers/schema.js'
import { ResponseHeadersSchema } from '../policies/response-headers/schema.js'
import { ResponseCacheSchema } from '../policies/response-cache/schema.js'
import { RetrySchema } from '../policies/retry/schema.js'
import { DURATION_PATTERN } from '../kernel/duration.js'

/**
 * The route file format. Every field has a description (editors show it) and, where optional, its default.
 * `patternMessage` is ours: the sentence an operator reads when a pattern does not match.
 * Policy keys bring their schemas from their own folders under src/policies: one line each below, so that RouteSpec
 * stays statically typed (the list of policies that act is src/policies/index.ts).
 */

const Duration = (description: string, defaultValue: string) =>
  Type.String({ pattern: DURATION_PATTERN, patternMessage: 'must be a duration such as 500ms, 5s, 1m or 1h', description, default: defaultValue })

export const SplitTargetSchema = Type.Object(
  {
    name: Type.Optional(
      Type.String({
        pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$',
        patternMessage: 'must be 1-63 letters, digits, dots, dashes or underscores, starting with a letter or digit',
        description: 'The target\'s name in metrics (`target`), the access log and the status page. Default: its `service`; required with `upstreams`.',
      }),
    ),
    service: Type.Optional(serviceNameSchema('Consul service whose passing instances serve this target. Exactly one of `upstreams` and `service`.')),
    upstreams: Type.Optional(upstreamsSchema('Static instances of this target. Exactly one of `upstreams` and `service`.')),
    weight: Type.Integer({ minimum: 0, maximum: 10_000, description: 'Its share of the route\'s requests, relative to the other targets\' (0: none, e.g. the idle side of a blue-green pair).' }),
  },
  { additionalProperties: false },
)

const PATH_PATTERN = '^/([^/\\s?#%]+(/[^/\\s?#%]+)*)?$'

export const TimeoutSchema = Type.Object(
  {
    connect: Type.Optional(Duration('How long to wait for a TCP connection to an instance.', '5s')),
    response: Type.Optional(
      Duration('How long to wait for the response headers, and then between two chunks of the body.', '30s'),
    ),
  },
  { additionalProperties: false, description: 'Per-route timeouts. A timeout answers 504 upstream_timeout.' },
)

// A route's WebSocket tunnels (each holds its own upstream connection), bounded per replica by default.
export const WebSocketSchema = Type.Object(
  {
    maxTunnels: Type.Optional(Type.Integer({ minimum: 1, default: 10_000, description: 'Most tunnels open on this route, per replica (or worker); more are answered 503 concurrency_limited.' })),
    maxTunnelsPerClient: Type.Optional(
      Type.Integer({ minimum: 1, default: 1_000, description: 'Most tunnels one client address holds on this route, per replica (or worker); more are answered 429 too_many_tunnels.' }),
    ),
  },
  { additionalProperties: false },
)

// TRACE is not among them: a gateway never reflects a request back (cross-site tracing), and answers it 405.
export const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const

export const RouteSchema = Type.Object(
  {
    name: Type.String({
      pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$',
      patternMessage: 'must be 1-63 letters, digits, dots, dashes or underscores, starting with a letter or digit',
      description: 'Unique name of the route; appears in logs, metrics and the admin API.',
    }),
    prefix: Type.String({
      pattern: PATH_PATTERN,
      patternMessage: 'must start with "/", have no trailing slash, no empty segment, no "?", "#", "%" or space',
      description:
        'Path prefix this route serves. Matches the prefix itself and anything below it (`/api` matches `/api` and `/api/x`, never `/apix`). The longest prefix whose route\'s `hosts`, `headers` and `methods` match wins; at one prefix, the route with more conditions.',
    }),
    upstreams: Type.Optional(upstreamsSchema('Static upstream instances. Exactly one of `upstreams`, `service` and `split`.')),
    service: Type.Optional(serviceNameSchema('Consul service whose passing instances serve this route. Exactly one of `upstreams`, `service` and `split`.')),
    split: Type.Optional(
      Type.Array(SplitTargetSchema, {
        minItems: 1,
        maxItems: 16,
        description:
          'Instead of `upstreams`/`service`: weighted targets, each with its own instances, breaker and outlier detection (a canary, a blue-green switch). A request goes to one by `stickyOn`\'s hash, or at random by weight; a target with no instance in rotation or an open breaker gives its share to the others. A weight change applies to new requests only.',
      }),
    ),
    stickyOn: Type.Optional(
      Type.String({
        pattern: `^(ip|consumer|${REQUEST_KEY_HEADER_PATTERN}|${REQUEST_KEY_COOKIE_PATTERN})$`,
        patternMessage: 'must be "ip", "consumer", "header:<Header-Name>" or "cookie:<name>"',
        description:
          'Keeps each client on one target of the `split`, the same on every replica and worker: the client address, the consumer `auth` established, a header or a cookie (requests without it are keyed by IP). A client moves only when the weights (or the targets that can take requests) change. Default: each request drawn at random by weight.',
      }),
    ),
    rewritePrefix: Type.Optional(
      Type.String({
        pattern: '^/([^/\\s?#%]+(/[^/\\s?#%]+)*/?)?$',
        patternMessage: 'must be a path starting with "/"',
        description: 'Replaces the matched prefix before forwarding (`prefix: /api/users`, `rewritePrefix: /` sends `/api/users/7` as `/7`). Default: the path is forwarded unchanged.',
      }),
    ),
    hosts: Type.Optional(
      Type.Array(
        Type.String({
          pattern: '^(\\*\\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$',
          patternMessage: 'must be a host name such as api.example.com, or *.example.com (one label), without a port',
        }),
        { minItems: 1, uniqueItems: true, description: 'The route takes only requests whose Host (without its port) is one of these. Default: any.' },
      ),
    ),
    headers: Type.Optional(
      Type.Record(Type.String({ pattern: "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$" }), Type.String({ pattern: '^[\\t\\x20-\\x7e]*$', patternMessage: 'must be visible ASCII' }), {
        additionalProperties: false,
        minProperties: 1,
        description: 'The route takes only requests with each of these headers equal to its value (its first value, when repeated).',
      }),
    ),
    methods: Type.Optional(
      Type.Array(Type.Union(HTTP_METHODS.map((m) => Type.Literal(m))), {
        minItems: 1,
        uniqueItems: true,
        description: 'Allowed methods; others answer 405. Default: all.',
      }),
    ),
    timeout: Type.Optional(TimeoutSchema),
    loadBalancer: Type.Optional(
      Type.Union(LOAD_BALANCERS.map((b) => Type.Literal(b)), {
        default: 'round-robin',
        description:
          'How an instance is picked: round-robin (weighted), least-request (power of two choices on in-flight requests), random (weighted), consistent-hash (on `hashOn`).',
      }),
    ),
    hashOn: Type.Optional(
      Type.String({
        pattern: `^(ip|${REQUEST_KEY_HEADER_PATTERN}|${REQUEST_KEY_COOKIE_PATTERN})$`,
        patternMessage: 'must be "ip", "header:<Header-Name>" or "cookie:<name>"',
        default: 'ip',
        description: 'Key of consistent-hash balancing: the client IP, a request header or a cookie (requests without it hash by IP). Only with `loadBalancer: consistent-hash`.',
      }),
    ),
    websocket: Type.Optional(
      Type.Union(
        [
          Type.Boolean(),
          WebSocketSchema,
        ],
        { default: false, description: 'Allow WebSocket upgrades on this route: `true` (with the default bounds), or the bounds of its tunnels.' },
      ),
    ),
    cors: Type.Optional(CorsSchema),
    auth: Type.Optional(AuthSchema),
    rateLimit: Type.Optional(RateLimitSchema),
    concurrencyLimit: Type.Optional(ConcurrencyLimitSchema),
    requestHeaders: Type.Optional(RequestHeadersSchema),
    responseHeaders: Type.Optional(ResponseHeadersSchema),
    mirror: Type.Optional(MirrorSchema),
    cache: Type.Optional(ResponseCacheSchema),
    circuitBreaker: Type.Optional(CircuitBreakerSchema),
    retry: Type.Optional(RetrySchema),
    outlierDetection: Type.Optional(OutlierDetectionSchema),
    preserveHost: Type.Optional(
      Type.Boolean({
        default: false,
        description: 'Send the client\'s Host header upstream. Default: the instance\'s host; the client\'s is in X-Forwarded-Host.',
      }),
    ),
  },
  { additionalProperties: false },
)

export const RouteFileSchema = Type.Object(
  {
    routes: Type.Optional(Type.Array(RouteSchema, { description: 'The routes of this file.' })),
    consumers: Type.Optional(
      Type.Array(ConsumerSchema, {
        description: 'Callers the routes\' `auth` knows by name (a consumers file: watched and refused like a route file). A name or key hash may be defined in one file only.',
      }),
    ),
  },
  {
    additionalProperties: false,
    $id: 'https://portico.dev/schema/routes.schema.json',
    title: 'Portico route file',
    description: 'A Portico route file (routes/*.yaml): routes, consumers, or both. Edits apply live; a file with an error is refused on its own.',
  },
)

export type RouteSpec = Static<typeof RouteSchema>
export type RouteFileSpec = Static<typeof RouteFileSchema>
