import cluster from 'node:cluster'

/** A message one worker of `--workers` sends the host's other workers (the primary passes it on). */
export interface HostMessage {
  readonly portico: 'host'
  readonly channel: string
  readonly message: string
}

export function isHostMessage(value: unknown): value is HostMessage {
  const message = value as Partial<HostMessage> | undefined
  return message?.portico === 'host' && typeof message.channel === 'string' && typeof message.message === 'string'
}

type Listener = (channel: string, message: string) => void
// One listener on the process for all of them: a route each would pass Node's warning threshold of ten.
const listeners = new Set<Listener>()
const onProcessMessage = (value: unknown) => {
  if (isHostMessage(value)) for (const listener of listeners) listener(value.channel, value.message)
}

/**
 * Publish/subscribe among the workers of one host, for state that must hold per host when there is no Redis (a breaker
 * opened by one worker is open in all). In a process that serves alone there is nobody to tell: both do nothing.
 */
export const hostChannel = {
  publish(channel: string, message: string): void {
    if (cluster.isWorker) process.send?.({ portico: 'host', channel, message } satisfies HostMessage)
  },
  /** Returns the function that stops listening. */
  subscribe(listener: Listener): () => void {
    if (!cluster.isWorker) return () => undefined
    if (listeners.size === 0) process.on('message', onProcessMessage)
    listeners.add(listener)
    return () => {
      listeners.delete(listener)
      if (listeners.size === 0) process.off('message', onProcessMessage)
    }
  },
}
