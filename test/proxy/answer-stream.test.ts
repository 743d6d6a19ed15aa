import { createHash, randomBytes } from 'node:crypto'
import { get } from 'node:http'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawnGateway, makeRoutesDir, type GatewayProcess } from '../support/gateway.js'
import { routeFile } from '../support/routes.js'
import { startUpstream, type Upstream } from '../support/upstream.js'

// The upstream's answer goes to the client chunk by chunk (send.ts, streamAnswer): what must hold whatever the client.
describe('an upstream answer streamed to the client', () => {
  const big = randomBytes(16 * 1024 * 1024)
  let upstream: Upstream
  let gateway: GatewayProcess
  beforeAll(async () => {
    upstream = await startUpstream('stream', (req, res) => {
      if (req.url?.startsWith('/big')) return void res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': big.length, 'set-cookie': ['a=1', 'b=2'] }).end(big)
      if (req.url?.startsWith('/cut')) {
        // Headers and a first chunk, then the connection dies mid-body.
        res.writeHead(200, { 'content-type': 'text/plain' })
        res.write('first chunk;')
        return void setTimeout(() => res.socket?.destroy(), 50)
      }
      res.writeHead(204, { 'x-empty': 'yes' }).end()
    })
    gateway = await spawnGateway(await makeRoutesDir({ 'r.yaml': routeFile('stream', '/stream', upstream.url, 'rewritePrefix: /') }))
  })
  afterAll(async () => {
    await gateway?.stop('SIGKILL')
    await upstream?.close()
  })

  it('gives a client that reads slowly the whole 16 MiB body intact, headers as the upstream sent them', async () => {
    const answer = await new Promise<{ status: number; cookies: string[] | undefined; length: string | undefined; sha: string; bytes: number }>((resolve, reject) => {
      get(`${gateway.url}/stream/big`, { agent: false }, (res) => {
        const hash = createHash('sha256')
        let bytes = 0
        // Reads in bursts with pauses between: the gateway's side fills up, and its upstream body must wait, not be dropped.
        res.on('data', (chunk: Buffer) => {
          hash.update(chunk)
          bytes += chunk.length
          if (bytes % (2 * 1024 * 1024) < chunk.length) {
            res.pause()
            setTimeout(() => res.resume(), 30)
          }
        })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, cookies: res.headers['set-cookie'], length: res.headers['content-length'], sha: hash.digest('hex'), bytes }))
        res.on('error', reject)
      }).on('error', reject)
    })
    expect(answer.status).toBe(200)
    expect(answer.bytes).toBe(big.length)
    expect(answer.sha).toBe(createHash('sha256').update(big).digest('hex'))
    expect(answer.length).toBe(String(big.length))
    expect(answer.cookies).toEqual(['a=1', 'b=2'])
  })

  it('cuts the client\'s connection when the upstream body breaks after its first chunk, never ending the answer as if whole', async () => {
    const outcome = await new Promise<{ status: number; body: string; aborted: boolean }>((resolve, reject) => {
      get(`${gateway.url}/stream/cut`, { agent: false }, (res) => {
        let body = ''
        res.on('data', (chunk: Buffer) => (body += chunk.toString()))
        res.on('error', () => undefined)
        res.on('close', () => resolve({ status: res.statusCode ?? 0, body, aborted: !res.complete }))
      }).on('error', reject)
    })
    expect(outcome).toEqual({ status: 200, body: 'first chunk;', aborted: true })
  })

  it('passes a bodiless 204 on with its headers', async () => {
    const answer = await new Promise<{ status: number; empty: string | undefined }>((resolve, reject) => {
      get(`${gateway.url}/stream/none`, { agent: false }, (res) => {
        res.resume()
        res.on('end', () => resolve({ status: res.statusCode ?? 0, empty: res.headers['x-empty'] as string | undefined }))
      }).on('error', reject)
    })
    expect(answer).toEqual({ status: 204, empty: 'yes' })
  })
})
