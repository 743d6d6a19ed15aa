import type { Static } from '@sinclair/typebox'
import { headerTransformsSchema, toHeaderTransforms, type HeaderTransforms } from '../header-transforms.js'

export const ResponseHeadersSchema = headerTransformsSchema({
  set: 'Headers of every answer with these values, whatever the upstream sent under those names.',
  add: 'Values appended to the answer\'s header of that name (after a comma), or the header when there is none.',
  remove: 'Headers never sent to the client, the upstream\'s included (Server, X-Powered-By).',
  description:
    'Header transforms on the way out, on every answer of the route: the upstream\'s, a cache hit, the gateway\'s own refusals. Values may hold ${requestId}, ${clientIp}, ${route}, ${consumer} (who `auth` let through; empty without) and ${header:Name} (the client\'s request header). Content-Length, Content-Encoding and hop-by-hop headers cannot be set or removed.',
})

export type ResponseHeadersSpec = Static<typeof ResponseHeadersSchema>
export type ResponseHeadersConfig = HeaderTransforms

// The body's framing and coding, and the connection, are the gateway's and node's.
const UNTOUCHABLE = new Set(['content-length', 'content-encoding', 'transfer-encoding', 'connection', 'keep-alive', 'proxy-connection', 'trailer', 'upgrade'])

export const toResponseHeadersConfig = (spec: ResponseHeadersSpec): ResponseHeadersConfig | string => toHeaderTransforms(ResponseHeadersSchema, spec, 'responseHeaders', UNTOUCHABLE)
