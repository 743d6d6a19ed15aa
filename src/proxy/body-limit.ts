import { Transform, type TransformCallback } from 'node:stream'

import { BODY_TOO_LARGE } from '../kernel/upstream-errors.js'

/**
 * Passes a streamed body through and fails it once it exceeds `maxBytes`: a chunked body has no Content-Length to
 * refuse up front, and must not reach the upstream whole either.
 */
export function limitBody(maxBytes: number): Transform {
  let seen = 0
  return new Transform({
    transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
      seen += chunk.length
      if (seen > maxBytes) return callback(Object.assign(new Error(`request body exceeds ${maxBytes} bytes`), { code: BODY_TOO_LARGE }))
      callback(null, chunk)
    },
  })
}
