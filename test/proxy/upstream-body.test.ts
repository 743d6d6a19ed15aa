import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { IncomingHttpHeaders } from 'node:http'
import type { BodySink, UpstreamBody } from '../../src/policies/policy.js'
import { AttemptSignal, kAttemptSignal, UpstreamDispatcher } from '../../src/proxy/upstream-dispatcher.js'
import { waitFor } from '../support/poll.js'
import { startUpstream, type Upstream } from '../support/upstream.js'

interface Answer {
  readonly statusCode: number
  readonly headers: IncomingHttpHeaders
  readonly body: UpstreamBody
}

/** A sink that records what it is handed, in order. */
function recordingSink(): BodySink & { readonly events: string[]; readonly text: () => string } {
  const chunks: Buffer[] = []
  const events: string[] = []
  return {
    events,
    text: () => Buffer.concat(chunks).toString(),
    data: (chunk) => void chunks.push(chunk),
    end: () => void events.push('end'),
    error: (error) => void events.push(`error: ${(error as { code?: string }).code ?? error.message}`),
  }
}

// The engine's body (upstream-dispatcher.ts) over real sockets: what a policy may rely on when it holds an answer.
describe('an upstream answer\'s body', () => {
  let upstream: Upstream
  const dispatcher = new UpstreamDispatcher()
  const closed: string[] = []
  beforeAll(async () => {
    upstream = await startUpstream('body', (req, res) => {
      res.on('close', () => closed.push(req.url ?? ''))
      if (req.url === '/chunks') {
        res.writeHead(200, { 'content-type': 'text/plain' })
        res.write('one;')
        setTimeout(() => res.write('two;'), 20)
        return void setTimeout(() => res.end('three'), 40)
      }
      if (req.url === '/endless') {
        res.writeHead(200, { 'content-type': 'text/plain' })
        res.write('first;')
        return // never ends: only a cancelled request closes it
      }
      if (req.url === '/silent') return // never answers
      if (req.url === '/cut') {
        res.writeHead(200, { 'content-length': '100' })
        res.write('part;')
        return void setTimeout(() => res.socket?.destroy(), 20)
      }
      res.end('ok')
    })
  })
  afterAll(async () => {
    await dispatcher.destroy()
    await upstream?.close()
  })

  function send(path: string, signal?: AttemptSignal): Promise<Answer> {
    return new Promise((resolve, reject) => {
      const headers = { [kAttemptSignal]: signal } as unknown as IncomingHttpHeaders
      dispatcher.requestable.request({ origin: upstream.url, path, method: 'GET', headers }, (error, answer) => (error ? reject(error) : resolve(answer as unknown as Answer)))
    })
  }

  /** Gives the answer's body a sink once the upstream has sent all of `/chunks` and closed its response. */
  async function pipeOnceSent(answer: Answer): Promise<ReturnType<typeof recordingSink>> {
    await waitFor(() => closed.includes('/chunks'), { timeoutMs: 5_000 })
    const sink = recordingSink()
    answer.body.pipeTo(sink)
    return sink
  }

  async function expectWholeChunks(sink: ReturnType<typeof recordingSink>): Promise<void> {
    await waitFor(() => sink.events.length > 0, { timeoutMs: 5_000 })
    expect(sink.text()).toBe('one;two;three')
    expect(sink.events).toEqual(['end'])
  }

  it('hands a sink given after the whole body came every chunk in order, then its end', async () => {
    closed.length = 0
    const answer = await send('/chunks')
    expect(answer.statusCode).toBe(200)
    // The body is held by nobody while the upstream sends the rest and ends it.
    await expectWholeChunks(await pipeOnceSent(answer))
  })

  it('holds chunks while its sink is paused, and hands them over on resume', async () => {
    closed.length = 0
    const answer = await send('/chunks')
    const sink = recordingSink()
    answer.body.pause()
    answer.body.pipeTo(sink)
    await waitFor(() => closed.includes('/chunks'), { timeoutMs: 5_000 })
    expect(sink.text()).toBe('')
    answer.body.resume()
    await expectWholeChunks(sink)
  })

  it('keeps what came for a sink when resumed before it has one', async () => {
    closed.length = 0
    const answer = await send('/chunks')
    answer.body.pause()
    answer.body.resume()
    await expectWholeChunks(await pipeOnceSent(answer))
  })

  it('cancels the upstream request when given up before it ended, and tells its sink nothing more', async () => {
    closed.length = 0
    const answer = await send('/endless')
    const sink = recordingSink()
    answer.body.pipeTo(sink)
    await waitFor(() => sink.text() === 'first;', { timeoutMs: 5_000 })
    answer.body.destroy()
    await waitFor(() => closed.includes('/endless'), { timeoutMs: 5_000 })
    expect(sink.events).toEqual([])
  })

  it('tells its sink of a body cut short, after the part that came', async () => {
    closed.length = 0
    const answer = await send('/cut')
    const sink = recordingSink()
    answer.body.pipeTo(sink)
    await waitFor(() => sink.events.length > 0, { timeoutMs: 5_000 })
    expect(sink.text()).toBe('part;')
    expect(sink.events).toHaveLength(1)
    expect(sink.events[0]).toMatch(/^error: /)
  })

  it('tells a paused sink of a body cut short at once, not at its resume', async () => {
    const answer = await send('/cut')
    const sink = recordingSink()
    answer.body.pause()
    answer.body.pipeTo(sink)
    await waitFor(() => sink.events.length > 0, { timeoutMs: 5_000, what: 'the paused sink to hear of the cut' })
    expect(sink.events[0]).toMatch(/^error: /)
    answer.body.resume()
    expect(sink.events).toHaveLength(1)
  })

  it('fails a request whose attempt was aborted before it was sent with the abort\'s reason, the upstream never asked', async () => {
    const signal = new AttemptSignal(5_000)
    const reason = Object.assign(new Error('the client went away'), { code: 'CLIENT_GONE' })
    signal.abort(reason)
    const before = upstream.requests.length
    await expect(send('/never', signal)).rejects.toBe(reason)
    expect(upstream.requests.slice(before).map((r) => r.url)).not.toContain('/never')
  })

  it('fails a request aborted while it waits for its answer, and closes its connection', async () => {
    closed.length = 0
    const signal = new AttemptSignal(5_000)
    const reason = new Error('the attempt timed out')
    const answered = send('/silent', signal)
    await waitFor(() => upstream.requests.some((r) => r.url === '/silent'), { timeoutMs: 5_000 })
    signal.abort(reason)
    await expect(answered).rejects.toBe(reason)
    await waitFor(() => closed.includes('/silent'), { timeoutMs: 5_000 })
  })
})
