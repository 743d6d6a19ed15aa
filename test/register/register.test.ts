import { spawn } from 'node:child_process'
import { createServer, request, type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { consulConnection } from '../../src/kernel/process-config.js'
import { createConsulClient } from '../../src/discovery/consul-client.js'
import { register } from '../../src/register/register.js'
import { passingIds, startConsul, type TestConsul } from '../support/consul.js'
import { freePort } from '../support/ports.js'
import { ROOT, runCli } from '../support/gateway.js'
import { waitFor } from '../support/poll.js'
import { startUpstream, type Upstream } from '../support/upstream.js'

const known = async (address: string, service: string): Promise<string[]> => {
  const response = await fetch(`${address}/v1/catalog/service/${service}`)
  return ((await response.json()) as { ServiceID: string }[]).map((s) => s.ServiceID)
}

describe('register() against the shared agent', () => {
  const consul = inject('consulAddress')
  let service: Upstream
  beforeAll(async () => {
    service = await startUpstream('svc', (req, res) => res.writeHead(req.url === '/health' ? 200 : 404).end())
  })
  afterAll(() => service?.close())

  it('registers with an HTTP health check that turns passing, and deregisters', async () => {
    const name = `reg-${process.pid}`
    const registration = await register({ name, port: service.port, health: { path: '/health', interval: '1s' }, consul: consulConnection({ CONSUL_HTTP_ADDR: consul }) })
    expect(registration.id).toBe(`${name}-${(await import('node:os')).hostname()}-${service.port}`)
    await waitFor(async () => (await passingIds(consul, name)).includes(registration.id), { timeoutMs: 10_000, what: 'the check to pass' })
    expect(service.requests.some((r) => r.url === '/health')).toBe(true)
    await registration.deregister()
    expect(await known(consul, name)).toEqual([])
  })
})

describe('register() when the agent is away or restarts (own agent)', () => {
  let consul: TestConsul
  beforeAll(async () => {
    consul = await startConsul()
  })
  afterAll(() => consul?.stop())

  it('retries until Consul is reachable, then registers', async () => {
    await consul.stop()
    const pending = register({ name: 'late', port: 7001, health: false, consul: consulConnection({ CONSUL_HTTP_ADDR: consul.address }) })
    let settled = false
    void pending.finally(() => (settled = true))
    await new Promise((resolve) => setImmediate(resolve))
    expect(settled).toBe(false)
    await consul.start()
    const registration = await pending
    expect(await known(consul.address, 'late')).toEqual([registration.id])
    await registration.deregister()
  })

  it('starts a healthy service passing, also when it registers again after an agent restart', async () => {
    const service = await startUpstream('healthy')
    // A check Consul runs once a minute: without a first status, the instance would wait up to a minute as critical.
    const registration = await register({ name: 'eager', port: service.port, health: { path: '/health', interval: '1m' }, resyncIntervalMs: 200, consul: consulConnection({ CONSUL_HTTP_ADDR: consul.address }) })
    try {
      await waitFor(async () => (await passingIds(consul.address, 'eager')).includes(registration.id), { timeoutMs: 1_500, what: 'the instance to pass at once' })
      await consul.stop()
      await consul.start()
      await waitFor(async () => (await passingIds(consul.address, 'eager')).includes(registration.id), { timeoutMs: 3_000, what: 'the re-registered instance to pass at once' })
    } finally {
      await registration.deregister()
      await service.close()
    }
  })

  it('registers again after the agent restarts and forgets it', async () => {
    const registration = await register({ name: 'sticky', port: 7002, health: false, resyncIntervalMs: 200, consul: consulConnection({ CONSUL_HTTP_ADDR: consul.address }) })
    await consul.stop()
    await consul.start()
    await waitFor(async () => (await known(consul.address, 'sticky')).includes(registration.id), { timeoutMs: 10_000, what: 're-registration' })
    await registration.deregister()
  })
})

describe('processes that register themselves', () => {
  const consul = inject('consulAddress')

  it('the example users service registers, passes its check, and deregisters on SIGTERM', async () => {
    const port = await freePort()
    const child = spawn(process.execPath, ['--conditions=portico-source', '--import', 'tsx', join(ROOT, 'examples/users.js')], {
      cwd: ROOT,
      env: { ...process.env, PORT: String(port), CONSUL_HTTP_ADDR: consul, HEALTH_INTERVAL: '1s', HOSTNAME: `ex-${process.pid}` },
    })
    let output = ''
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()))
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()))
    const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve(signal ?? code)))
    const id = await waitFor(async () => (await passingIds(consul, 'users')).find((i) => i.endsWith(`-${port}`)), { timeoutMs: 15_000, what: 'users to pass' })
    child.kill('SIGTERM')
    await exited
    expect(output).toContain(`deregistered ${id}`)
    // the agent syncs a deregistration to the catalog right away, but not within the same call (and slower on a busy machine)
    await waitFor(async () => !(await known(consul, 'users')).includes(id), { timeoutMs: 15_000, what: `users to leave the catalog; the service said:\n${output}` })
  })

  it('`portico register` registers a service written in anything, and deregisters on SIGTERM', async () => {
    const service = await startUpstream('legacy', (req, res) => res.writeHead(req.url === '/health' ? 200 : 404).end())
    const child = runCli(['register', '--name', `legacy-${process.pid}`, '--port', String(service.port), '--health', '/health', '--health-interval', '1s', '--tag', 'php', '--meta', 'team=billing'], {
      CONSUL_HTTP_ADDR: consul,
    })
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve))
    const id = await waitFor(async () => (await passingIds(consul, `legacy-${process.pid}`))[0], { timeoutMs: 15_000, what: 'legacy to pass' })
    const entry = ((await (await fetch(`${consul}/v1/catalog/service/legacy-${process.pid}`)).json()) as { ServiceTags: string[]; ServiceMeta: Record<string, string> }[])[0]
    expect(entry).toMatchObject({ ServiceTags: ['php'], ServiceMeta: { team: 'billing' } })
    child.kill('SIGTERM')
    expect(await exited).toBe(0)
    await waitFor(async () => !(await known(consul, `legacy-${process.pid}`)).includes(id), { what: 'legacy to leave the catalog' })
    await service.close()
  })

  it('`portico register` deregisters on a SIGTERM that arrives before Consul\'s answer to the registration', async () => {
    // Consul shows the instance passing before its answer reaches the process: hold that answer until the signal is sent.
    const service = await startUpstream('late', (req, res) => res.writeHead(req.url === '/health' ? 200 : 404).end())
    let signalSent!: () => void
    const released = new Promise<void>((resolve) => (signalSent = resolve))
    const agent = new URL(consul)
    const holdingProxy = createServer((req, res) => {
      const upstream = request({ host: agent.hostname, port: agent.port, method: req.method, path: req.url, headers: req.headers }, async (answer) => {
        if (req.url?.startsWith('/v1/agent/service/register')) await released
        res.writeHead(answer.statusCode ?? 502, answer.headers)
        answer.pipe(res)
      })
      req.pipe(upstream)
    })
    await new Promise<void>((resolve) => holdingProxy.listen(0, '127.0.0.1', resolve))
    const name = `late-${process.pid}`
    const child = runCli(['register', '--name', name, '--port', String(service.port), '--health', '/health'], {
      CONSUL_HTTP_ADDR: `127.0.0.1:${(holdingProxy.address() as AddressInfo).port}`,
    })
    let output = ''
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()))
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()))
    const exited = new Promise<number | string | null>((resolve) => child.once('exit', (code, signal) => resolve(signal ?? code)))
    await waitFor(async () => (await passingIds(consul, name))[0], { timeoutMs: 15_000, what: `${name} to pass` })
    child.kill('SIGTERM')
    signalSent()
    expect(await exited, output).toBe(0)
    await waitFor(async () => (await known(consul, name)).length === 0, { timeoutMs: 15_000, what: `${name} to leave the catalog; it said:\n${output}` })
    holdingProxy.closeAllConnections()
    holdingProxy.close()
    await service.close()
  })

  it('`portico register` refuses bad arguments', async () => {
    const child = runCli(['register', '--name', 'x', '--port', 'abc'])
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    expect(await new Promise((resolve) => child.once('exit', resolve))).toBe(2)
    expect(stderr).toMatch(/--port "abc" is not a port number/)
  })
})

describe('the Consul adapter', () => {
  it.each([
    [{}, { address: 'http://127.0.0.1:8500', secure: false, token: undefined }],
    [{ CONSUL_HTTP_ADDR: '10.1.2.3:8501' }, { address: 'http://10.1.2.3:8501', secure: false }],
    [{ CONSUL_HTTP_ADDR: 'consul.internal:8501', CONSUL_HTTP_SSL: 'true' }, { address: 'https://consul.internal:8501', secure: true }],
    [{ CONSUL_HTTP_ADDR: 'https://consul.internal' }, { address: 'https://consul.internal', secure: true }],
    [{ CONSUL_HTTP_TOKEN: 's3cret', CONSUL_CACERT: '/etc/ca.pem' }, { token: 's3cret', caFile: '/etc/ca.pem' }],
  ])('reads %j', (env, expected) => {
    expect(consulConnection(env)).toMatchObject(expected)
  })

  it('refuses an address it cannot parse', () => {
    expect(() => consulConnection({ CONSUL_HTTP_ADDR: 'http://[bad' })).toThrow(/CONSUL_HTTP_ADDR: "http:\/\/\[bad" is not an address/)
  })

  it('sends the ACL token with every call when one is set', async () => {
    const seen: IncomingHttpHeaders[] = []
    const fake = createServer((req, res) => {
      seen.push(req.headers)
      res.setHeader('x-consul-index', '5')
      res.setHeader('content-type', 'application/json')
      res.end(req.url?.startsWith('/v1/agent/services') ? '{}' : req.url?.startsWith('/v1/health') ? '[]' : '')
    })
    await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', resolve))
    const { port } = fake.address() as AddressInfo
    const client = createConsulClient(consulConnection({ CONSUL_HTTP_ADDR: `127.0.0.1:${port}`, CONSUL_HTTP_TOKEN: 'acl-token-1' }))
    const result = await client.healthyInstances('x', { index: 3, waitSeconds: 1, signal: new AbortController().signal })
    await client.register({ id: 'a', name: 'a', port: 1 })
    await client.hasService('a')
    fake.close()
    expect(result).toEqual({ index: 5, value: [] })
    expect(seen).toHaveLength(3)
    expect(seen.every((h) => h['x-consul-token'] === 'acl-token-1')).toBe(true)
  })
})
