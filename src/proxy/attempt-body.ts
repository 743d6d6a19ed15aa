import { Readable } from 'node:stream'
import type { BodyCopy as PolicyBodyCopy } from '../policies/policy.js'

/**
 * The request body as one attempt sends it: a view of the client's stream that reads nothing until the upstream
 * connection asks for the first byte. undici destroys the body of a request that fails to connect; through this view
 * it destroys the view only, so an attempt refused before sending leaves the body whole for the next attempt.
 */
export class AttemptBody extends Readable {
  readonly #source: Readable
  readonly #copies: readonly BodyCopy[] | undefined
  #reading = false
  // The client's stream can fail before the upstream reads a byte (a chunked body passing the limit): this attempt fails.
  readonly #onSourceError = (error: Error): void => void this.destroy(error)

  constructor(source: Readable, copies?: readonly BodyCopy[]) {
    super()
    this.#source = source
    this.#copies = copies
    if (source.errored) process.nextTick(this.#onSourceError, source.errored)
    else source.once('error', this.#onSourceError)
  }

  /** Nothing of the client's body has been read through this view. */
  get untouched(): boolean {
    return !this.#reading
  }

  override _read(): void {
    if (this.#reading) return void this.#source.resume()
    this.#reading = true
    const copies = this.#copies
    this.#source.on('data', (chunk: Buffer) => {
      if (copies !== undefined) for (const copy of copies) copy.offer(chunk)
      if (!this.push(chunk)) this.#source.pause()
    })
    this.#source.once('end', () => {
      if (copies !== undefined) for (const copy of copies) copy.finish()
      this.push(null)
    })
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    // Once read from, the body is spent either way: the client's stream goes with it (it may be still arriving).
    if (this.#reading) this.#source.destroy(error ?? undefined)
    else this.#source.off('error', this.#onSourceError)
    callback(error)
  }
}

/**
 * A copy of the client's body for a request sent beside the attempts (a mirror's), fed as an attempt reads the body.
 * It never slows the attempt: what its reader has not taken yet is buffered up to a bound, and past it the copy is
 * given up (`dropped`) rather than the client held back.
 */
export class BodyCopy extends Readable implements PolicyBodyCopy {
  static readonly MAX_BEHIND_BYTES = 1024 * 1024
  #dropped = false
  #finished = false

  get dropped(): boolean {
    return this.#dropped
  }

  offer(chunk: Buffer): void {
    if (this.destroyed) return
    this.push(chunk)
    if (this.readableLength > BodyCopy.MAX_BEHIND_BYTES) {
      this.#dropped = true
      this.destroy(new Error(`the copy of the body fell more than ${BodyCopy.MAX_BEHIND_BYTES} bytes behind`))
    }
  }

  finish(): void {
    this.#finished = true
    if (!this.destroyed) this.push(null)
  }

  /** The request ended: a copy whose body never came whole is given up. */
  abandon(): void {
    if (!this.#finished && !this.destroyed) this.destroy(new Error('the request ended before its body was read'))
  }

  override _read(): void {
    // Fed by offer(); nothing to pull.
  }
}
