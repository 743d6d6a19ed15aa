import { applyTransforms } from '../header-transforms.js'
import type { PolicyKind } from '../policy.js'
import { RequestHeadersSchema, toRequestHeadersConfig, type RequestHeadersConfig, type RequestHeadersSpec } from './schema.js'

/**
 * `requestHeaders`: sets, appends to and removes headers of what goes upstream, after the gateway's own forwarding
 * headers, on every attempt (and a WebSocket handshake). A guard, so a route's cache keys on what it sent.
 */
export const requestHeadersPolicy: PolicyKind<RequestHeadersSpec, RequestHeadersConfig> = {
  key: 'requestHeaders',
  schema: RequestHeadersSchema,
  toConfig: toRequestHeadersConfig,
  create: ({ name: route }, transforms) => ({
    guard(ex, next) {
      applyTransforms(transforms, ex, route, (name) => ex.forwardedHeaders()[name], (name, value) => ex.setUpstreamHeader(name, value))
      next()
    },
    describe: () => ({ set: [...transforms.set.keys()], add: [...transforms.add.keys()], remove: transforms.remove }),
  }),
}
