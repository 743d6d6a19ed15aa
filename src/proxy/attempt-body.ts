import { Readable } from 'node:stream'

/**
 * The request body as one attempt sends it: a view of the client's stream that reads nothing until the upstream
 * connection asks for the first byte. undici destroys the body of a request that fails to connect; through this view
 * it destroys the view only, so an attempt refused before sending leaves the body whole for the next attempt.
 */
export class AttemptBody extends Readable {
  readonly #source: Readable
  #reading = false
  // The client's stream can fail before the upstream reads a byte (a chunked body passing the limit): this attempt fails.
  readonly #onSourceError = (error: Error): void => void this.destroy(error)

  constructor(source: Readable) {
    super()
    this.#source = source
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
    this.#source.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) this.#source.pause()
    })
    this.#source.once('end', () => this.push(null))
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    // Once read from, the body is spent either way: the client's stream goes with it (it may be still arriving).
    if (this.#reading) this.#source.destroy(error ?? undefined)
    else this.#source.off('error', this.#onSourceError)
    callback(error)
  }
}
