import type { Static } from '@sinclair/typebox'
import { headerTransformsSchema, toHeaderTransforms, type HeaderTransforms } from '../header-transforms.js'

export const RequestHeadersSchema = headerTransformsSchema({
  set: 'Headers sent upstream with these values, whatever the client sent under those names.',
  add: 'Values appended to the header of that name (after a comma), or the header when there is none.',
  remove: 'Headers never sent upstream, the client\'s included.',
  description:
    'Header transforms on the way in, applied after the gateway\'s own forwarding headers. Values may hold ${requestId}, ${clientIp}, ${route}, ${consumer} (who `auth` let through; empty without) and ${header:Name} (the client\'s header). Host, Content-Length and hop-by-hop headers cannot be set or removed.',
})

export type RequestHeadersSpec = Static<typeof RequestHeadersSchema>
export type RequestHeadersConfig = HeaderTransforms

// What a transform may not touch: the message's framing and the connection are the gateway's and node's.
const UNTOUCHABLE = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'expect'])

export const toRequestHeadersConfig = (spec: RequestHeadersSpec): RequestHeadersConfig | string => toHeaderTransforms(RequestHeadersSchema, spec, 'requestHeaders', UNTOUCHABLE)
