import { applyTransforms } from '../header-transforms.js'
import type { PolicyKind } from '../policy.js'
import { ResponseHeadersSchema, toResponseHeadersConfig, type ResponseHeadersConfig, type ResponseHeadersSpec } from './schema.js'

/**
 * `responseHeaders`: sets, appends to and removes headers of every answer of the route, just before they go out:
 * the upstream's, a cache hit (the stored answer keeps the upstream's own headers; each hit is shaped for its request),
 * and the gateway's own refusals.
 */
export const responseHeadersPolicy: PolicyKind<ResponseHeadersSpec, ResponseHeadersConfig> = {
  key: 'responseHeaders',
  schema: ResponseHeadersSchema,
  toConfig: toResponseHeadersConfig,
  create: ({ name: route }, transforms) => ({
    guard(ex, next) {
      const { reply } = ex
      ex.beforeAnswer(() =>
        applyTransforms(
          transforms,
          ex,
          route,
          (name) => reply.getHeaders()[name],
          (name, value) => void (value === undefined ? reply.removeHeader(name) : reply.header(name, value)),
        ),
      )
      next()
    },
    describe: () => ({ set: [...transforms.set.keys()], add: [...transforms.add.keys()], remove: transforms.remove }),
  }),
}
