import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parse, parseAllDocuments } from 'yaml'
import { describe, expect, it } from 'vitest'
import { mergeRouteSources } from '../../src/config/merge-sources.js'
import { publishedRouteSchema } from '../../src/config/published-schema.js'
import { ROOT } from '../support/gateway.js'

const read = (path: string) => readFile(join(ROOT, path), 'utf8')

interface ComposeService {
  build?: string
  image?: string
  entrypoint?: string[]
  environment?: Record<string, string>
  volumes?: string[]
  depends_on?: Record<string, unknown>
}

describe('docker-compose.yml', () => {
  it('runs consul, redis, portico and the self-registering examples, with consistent references', async () => {
    const compose = parse(await read('docker-compose.yml')) as { services: Record<string, ComposeService> }
    const names = Object.keys(compose.services)
    expect(names).toEqual(expect.arrayContaining(['consul', 'redis', 'portico', 'users', 'orders']))
    const images = new Set(Object.values(compose.services).flatMap((s) => (s.build ? [s.image] : [])))
    for (const [name, service] of Object.entries(compose.services)) {
      for (const dependency of Object.keys(service.depends_on ?? {})) expect(names, `${name} depends on ${dependency}`).toContain(dependency)
      const consul = service.environment?.CONSUL_HTTP_ADDR
      if (consul) expect(names).toContain(consul.split(':')[0])
      const redis = service.environment?.REDIS_URL
      if (redis) expect(names).toContain(new URL(redis).hostname)
      if (service.image?.startsWith('portico:')) expect(images.has(service.image), `${name} uses a built image`).toBe(true)
      for (const volume of service.volumes ?? []) {
        const host = volume.split(':')[0] ?? ''
        if (host.startsWith('./')) await expect(read(host.slice(2) + '/services.yaml')).resolves.toContain('routes:')
      }
      if (service.entrypoint?.[1]) await expect(read(service.entrypoint[1])).resolves.toContain('serve(')
    }
    // every service a route names is one that registers itself
    const routes = mergeRouteSources([{ source: 'deploy/routes/services.yaml', text: await read('deploy/routes/services.yaml') }], new Map())
    expect(routes.sources[0]?.errors).toEqual([])
    for (const route of routes.routes) if (route.target.kind === 'service') expect(names).toContain(route.target.service)
  })

  it('has a Dockerfile whose entrypoint is the built CLI', async () => {
    const dockerfile = await read('Dockerfile')
    expect(dockerfile).toMatch(/ENTRYPOINT \["node", "dist\/cli\.js"\]/)
    expect(dockerfile).toMatch(/COPY deploy\/routes/)
  })
})

describe('Kubernetes manifests', () => {
  it('parse, and the Deployment, Service, probes and ConfigMap agree with each other', async () => {
    const docs = parseAllDocuments(await read('deploy/kubernetes/portico.yaml')).map((d) => {
      expect(d.errors).toEqual([])
      return d.toJS() as { kind: string; metadata: { name: string }; spec?: any; data?: Record<string, string> }
    })
    const byKind = (kind: string, name: string) => docs.find((d) => d.kind === kind && d.metadata.name === name)
    const deployment = byKind('Deployment', 'portico')
    const service = byKind('Service', 'portico')
    const config = byKind('ConfigMap', 'portico-routes')
    expect(deployment && service && config).toBeTruthy()
    expect(service?.spec.selector).toEqual(deployment?.spec.template.metadata.labels)
    const container = deployment?.spec.template.spec.containers[0]
    const portNames = container.ports.map((p: { name: string }) => p.name)
    expect(portNames).toContain(service?.spec.ports[0].targetPort)
    expect(container.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'admin' })
    expect(deployment?.spec.template.spec.volumes[0].configMap.name).toBe('portico-routes')
    const redisUrl = container.env.find((e: { name: string }) => e.name === 'REDIS_URL').value
    expect(byKind('Service', new URL(redisUrl).hostname)).toBeTruthy()
    const routes = mergeRouteSources(Object.entries(config?.data ?? {}).map(([source, text]) => ({ source, text })), new Map())
    expect(routes.sources.flatMap((s) => s.errors)).toEqual([])
  })
})

describe('published JSON Schema', () => {
  it('is up to date with the route schema (run `npm run schema`)', async () => {
    expect(await read('schema/routes.schema.json')).toBe(publishedRouteSchema())
  })
})
