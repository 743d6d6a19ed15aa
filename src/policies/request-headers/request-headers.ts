import type { PolicyExchange, PolicyKind } from '../policy.js'
import { RequestHeadersSchema, toRequestHeadersConfig, type HeaderTemplate, type RequestHeadersConfig, type RequestHeadersSpec } from './schema.js'

/** A template's text for one request. */
function render(template: HeaderTemplate, ex: PolicyExchange, route: string): string {
  let text = ''
  for (const part of template) {
    if (typeof part === 'string') text += part
    else if ('header' in part) {
      const value = ex.request.headers[part.header]
      text += Array.isArray(value) ? value.join(', ') : (value ?? '')
    } else text += part.variable === 'requestId' ? ex.request.id : part.variable === 'clientIp' ? ex.request.ip : route
  }
  return text
}

/**
 * `requestHeaders`: sets, appends to and removes headers of what goes upstream, after the gateway's own forwarding
 * headers, on every attempt (and a WebSocket handshake). A guard, so a route's cache keys on what it sent.
 */
export const requestHeadersPolicy: PolicyKind<RequestHeadersSpec, RequestHeadersConfig> = {
  key: 'requestHeaders',
  schema: RequestHeadersSchema,
  toConfig: toRequestHeadersConfig,
  create: ({ name: route }, { set, add, remove }) => ({
    guard(ex, next) {
      for (const name of remove) ex.setUpstreamHeader(name, undefined)
      for (const [name, template] of set) ex.setUpstreamHeader(name, render(template, ex, route))
      for (const [name, template] of add) {
        const current = ex.forwardedHeaders()[name]
        const value = render(template, ex, route)
        ex.setUpstreamHeader(name, current === undefined ? value : `${Array.isArray(current) ? current.join(', ') : current}, ${value}`)
      }
      next()
    },
    describe: () => ({ set: [...set.keys()], add: [...add.keys()], remove }),
  }),
}
