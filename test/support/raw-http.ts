import { connect, type Socket } from 'node:net'

/**
 * Bytes exactly as written, to a server on 127.0.0.1, for tests where the bytes matter (smuggling, framing, pipelining).
 * Resolves with everything the server sent once it closed the connection, or after `idleMs` of silence with the
 * connection still open (`open: true`).
 */
export function rawExchange(port: number, bytes: string | Buffer, { idleMs = 500, waitMs = 10_000 }: { idleMs?: number; waitMs?: number } = {}): Promise<{ text: string; open: boolean }> {
  return new Promise((resolve) => {
    const socket: Socket = connect(port, '127.0.0.1', () => socket.write(bytes))
    let text = ''
    let idle: NodeJS.Timeout | undefined
    const finish = (open: boolean) => {
      clearTimeout(idle)
      clearTimeout(cap)
      socket.destroy()
      resolve({ text, open })
    }
    const cap = setTimeout(() => finish(true), waitMs)
    const arm = () => {
      clearTimeout(idle)
      idle = setTimeout(() => finish(true), idleMs)
    }
    socket.on('data', (chunk) => {
      text += chunk.toString('latin1')
      arm()
    })
    socket.on('close', () => finish(false))
    socket.on('error', () => undefined)
    arm()
  })
}

/** The status codes of every response in a raw exchange, in order (a response may follow a body without a line end). */
export const statusesOf = (text: string): number[] => [...text.matchAll(/HTTP\/1\.[01] (\d{3}) /g)].map((m) => Number(m[1]))
