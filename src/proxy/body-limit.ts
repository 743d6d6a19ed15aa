import { Transform, type TransformCallback } from 'node:stream'

import { BODY_TOO_LARGE } from '../kernel/upstream-errors.js'

/**
 * Passes a streamed body through and fails it once it exceeds `maxBytes`: a chunked body has no Content-Length to
 * refuse up front, and must not reach the upstream whole either. `bytes` counts what went through (the access log's).
 */
export class LimitedBody extends Transform {
  readonly #maxBytes: number
  bytes = 0

  constructor(maxBytes: number) {
    super()
    this.#maxBytes = maxBytes
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length
    if (this.bytes > this.#maxBytes) return callback(Object.assign(new Error(`request body exceeds ${this.#maxBytes} bytes`), { code: BODY_TOO_LARGE }))
    callback(null, chunk)
  }
}
