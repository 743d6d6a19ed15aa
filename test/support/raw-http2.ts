import { connect, type TLSSocket } from 'node:tls'

/** Frame types and flags of RFC 9113 §6, as a hostile client writes them. */
export const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const
export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const
export const SETTING = { MAX_CONCURRENT_STREAMS: 0x3, INITIAL_WINDOW_SIZE: 0x4 } as const
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n')

export interface Frame {
  readonly type: number
  readonly flags: number
  readonly stream: number
  readonly payload: Buffer
}

export function frame(type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(9)
  header.writeUIntBE(payload.length, 0, 3)
  header.writeUInt8(type, 3)
  header.writeUInt8(flags, 4)
  header.writeUInt32BE(stream & 0x7fffffff, 5)
  return Buffer.concat([header, payload])
}

export function settings(entries: [id: number, value: number][]): Buffer {
  const payload = Buffer.alloc(entries.length * 6)
  entries.forEach(([id, value], i) => {
    payload.writeUInt16BE(id, i * 6)
    payload.writeUInt32BE(value, i * 6 + 2)
  })
  return frame(FRAME.SETTINGS, 0, 0, payload)
}

function literal(index: number, value: string): Buffer {
  // Literal without indexing, an indexed name (RFC 7541 §6.2.2); short values only (7-bit length).
  const bytes = Buffer.from(value)
  if (index > 14 || bytes.length > 126) throw new Error('a short literal only')
  return Buffer.concat([Buffer.from([index, bytes.length]), bytes])
}

/** A header field with a new name, not indexed: `name: value`, both short. */
export function field(name: string, value: string): Buffer {
  const n = Buffer.from(name)
  const v = Buffer.from(value)
  return Buffer.concat([Buffer.from([0, n.length]), n, Buffer.from([v.length]), v])
}

/** HPACK for GET `path` on `authority` over https (static table: :method GET 2, :scheme https 7, :path 4, :authority 1). */
export function requestBlock(path: string, authority = 'gateway.test'): Buffer {
  return Buffer.concat([Buffer.from([0x82, 0x87]), literal(4, path), literal(1, authority)])
}

/** A TLS connection speaking raw HTTP/2 frames: it answers the server's SETTINGS and records every frame it gets. */
export class RawHttp2 {
  readonly frames: Frame[] = []
  readonly closed: Promise<void>
  readonly #socket: TLSSocket
  #buffer = Buffer.alloc(0)

  private constructor(socket: TLSSocket) {
    this.#socket = socket
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()))
    socket.on('error', () => undefined)
    socket.on('data', (chunk: Buffer) => this.#read(chunk))
  }

  static open(port: number, initialSettings: [number, number][] = []): Promise<RawHttp2> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port, servername: 'gateway.test', ALPNProtocols: ['h2'], rejectUnauthorized: false }, () => {
        const client = new RawHttp2(socket)
        socket.write(Buffer.concat([PREFACE, settings(initialSettings)]))
        resolve(client)
      })
      socket.once('error', reject)
    })
  }

  get destroyed(): boolean {
    return this.#socket.destroyed
  }

  /** Writes frames; resolves once written (or at once if the server already closed the connection). */
  write(bytes: Buffer): Promise<void> {
    if (this.#socket.destroyed) return Promise.resolve()
    return new Promise((resolve) => this.#socket.write(bytes, () => resolve()))
  }

  /** The error code of the server's GOAWAY, if it sent one. */
  goaway(): number | undefined {
    return this.frames.find((f) => f.type === FRAME.GOAWAY)?.payload.readUInt32BE(4)
  }

  /** RST_STREAM error codes the server sent, by stream. */
  resets(): Map<number, number> {
    return new Map(this.frames.filter((f) => f.type === FRAME.RST_STREAM).map((f) => [f.stream, f.payload.readUInt32BE(0)]))
  }

  close(): void {
    this.#socket.destroy()
  }

  #read(chunk: Buffer): void {
    this.#buffer = Buffer.concat([this.#buffer, chunk])
    while (this.#buffer.length >= 9) {
      const length = this.#buffer.readUIntBE(0, 3)
      if (this.#buffer.length < 9 + length) return
      const received = { type: this.#buffer.readUInt8(3), flags: this.#buffer.readUInt8(4), stream: this.#buffer.readUInt32BE(5) & 0x7fffffff, payload: this.#buffer.subarray(9, 9 + length) }
      this.#buffer = this.#buffer.subarray(9 + length)
      this.frames.push(received)
      if (received.type === FRAME.SETTINGS && (received.flags & FLAG.ACK) === 0 && !this.#socket.destroyed) this.#socket.write(frame(FRAME.SETTINGS, FLAG.ACK, 0))
    }
  }
}
