import { execFile } from 'node:child_process'
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, describe, expect, it } from 'vitest'
import { GatewayMetrics } from '../../src/observability/metrics.js'
import { PolicyEvents } from '../../src/policies/policy-events.js'
import type { AnyPolicyKind, PolicyDeps, PolicyExchange } from '../../src/policies/policy.js'
import { PolicyRegistry } from '../../src/policies/policy-registry.js'
import { ROOT } from '../support/gateway.js'
import { emptySources } from '../support/metrics.js'

// The README's example policy, where it says it lives (under a folder of the test's own), its imports pointed at src/policies.
const HERE = join(ROOT, 'test', '.generated', 'served-by')
const FILE = join(HERE, 'served-by.ts')

async function writeReadmeExample(): Promise<void> {
  const readme = await readFile(join(ROOT, 'README.md'), 'utf8')
  const block = /A complete policy,[\s\S]*?```ts\n([\s\S]*?)```/.exec(readme)?.[1]
  if (!block) throw new Error('README: no example policy after "A complete policy,"')
  const code = block.replace(/^ {2}/gm, '').replaceAll("from '../", `from '${join(ROOT, 'src', 'policies')}/`)
  await mkdir(HERE, { recursive: true })
  await writeFile(FILE, code)
}

describe('the README\'s example policy', () => {
  afterAll(() => rm(join(ROOT, 'test', '.generated'), { recursive: true, force: true }))

  it('type-checks as it is written, under the project\'s strict settings', async () => {
    await writeReadmeExample()
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc')
    const flags = ['--noEmit', '--strict', '--noUncheckedIndexedAccess', '--target', 'ES2022', '--module', 'NodeNext', '--moduleResolution', 'NodeNext', '--skipLibCheck', '--types', 'node', FILE]
    const result = await promisify(execFile)(process.execPath, [tsc, ...flags], { cwd: ROOT }).then(() => '', (error: { stdout?: string }) => error.stdout ?? String(error))
    expect(result).toBe('')
  }, 60_000)

  it('stamps answers and reaches the metrics and the status column from its declaration alone', async () => {
    await writeReadmeExample()
    const { servedByPolicy } = (await import(FILE)) as { servedByPolicy: AnyPolicyKind }
    const events = new PolicyEvents()
    const registry = new PolicyRegistry([servedByPolicy], { events } as unknown as PolicyDeps)
    const built = registry.build([{ name: 'orders', timeout: { connectMs: 100, responseMs: 1_000 }, policies: new Map([['servedBy', servedByPolicy.toConfig({ header: 'X-Route' })]]) }])
    built.commit()
    const live = built.byRoute.get('orders') ?? []
    const headers: Record<string, string> = {}
    const ex = { reply: { header: (name: string, value: string) => (headers[name] = value) } } as unknown as PolicyExchange
    for (let i = 0; i < 3; i++) await new Promise<void>((resolve, reject) => live[0]?.policy.guard?.(ex, (error) => (error ? reject(error) : resolve())))
    expect(headers).toEqual({ 'x-route': 'orders' })
    const metrics = new GatewayMetrics({ ...emptySources(), policyKinds: [servedByPolicy], gateway: () => ({ ...emptySources().gateway(), policyEvents: events }) })
    expect(await metrics.registry.metrics()).toContain('portico_served_by_stamps_total{route="orders",header="x-route"} 3')
    expect(servedByPolicy.column?.cell(live[0]?.policy, 'orders', { events } as unknown as PolicyDeps)).toEqual({ mark: 'on', text: '3' })
    expect(servedByPolicy.column?.cell(undefined, 'catalog', { events } as unknown as PolicyDeps)).toBeUndefined()
  })
})
