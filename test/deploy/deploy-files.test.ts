import { access, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parse, parseAllDocuments } from 'yaml'
import { describe, expect, it } from 'vitest'
import { mergeRouteSources } from '../../src/config/merge-sources.js'
import { publishedRouteSchema } from '../../src/config/published-schema.js'
import { loadConfig } from '../../src/kernel/process-config.js'
import { ROOT } from '../support/gateway.js'
import { GatewayMetrics } from '../../src/observability/metrics.js'
import { emptySources } from '../support/metrics.js'

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
        const [host = '', target = ''] = volume.split(':')
        if (target === '/etc/portico/routes') await expect(read(host.slice(2) + '/services.yaml')).resolves.toContain('routes:')
        else if (host.startsWith('./')) await expect(access(join(ROOT, host.slice(2))), `${name} mounts ${host}`).resolves.toBeUndefined()
      }
      if (service.entrypoint?.[1]) await expect(read(service.entrypoint[1])).resolves.toContain('serve(')
    }
    // every service a route names is one that registers itself
    const routes = mergeRouteSources([{ source: 'deploy/routes/services.yaml', text: await read('deploy/routes/services.yaml') }], new Map())
    expect(routes.sources[0]?.errors).toEqual([])
    for (const route of routes.routes) for (const { upstream } of route.targets) if (upstream.kind === 'service') expect(names).toContain(upstream.service)
  })

  it('has Prometheus scrape every replica\'s admin port with the admin token, and Grafana provisioned with the dashboard', async () => {
    const compose = parse(await read('docker-compose.yml')) as { services: Record<string, ComposeService> }
    const prometheus = parse(await read('deploy/prometheus/prometheus.yml')) as {
      rule_files: string[]
      scrape_configs: { authorization: { credentials: string }; static_configs: { targets: string[] }[] }[]
    }
    const replicas = Object.entries(compose.services).filter(([, s]) => s.image?.startsWith('portico:') && !s.entrypoint)
    const targets = prometheus.scrape_configs.flatMap((c) => c.static_configs.flatMap((t) => t.targets))
    expect(targets.sort()).toEqual(replicas.map(([name]) => `${name}:9901`).sort())
    for (const [, service] of replicas) {
      expect(service.environment?.PORTICO_ADMIN_HOST).toBe('0.0.0.0')
      expect(service.environment?.PORTICO_ADMIN_TOKEN).toBe(prometheus.scrape_configs[0]?.authorization.credentials)
    }
    expect(compose.services.prometheus?.volumes).toContain('./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro')
    expect(prometheus.rule_files).toEqual(['/etc/prometheus/alerts.yml'])
    const provisioning = parse(await read('deploy/grafana/provisioning/dashboards/portico.yml')) as { providers: { options: { path: string } }[] }
    expect(compose.services.grafana?.volumes).toContain(`./deploy/grafana/portico.json:${provisioning.providers[0]?.options.path}/portico.json:ro`)
  })

  it('has a TLS override that serves a certificate from Docker secrets, with settings the gateway takes', async () => {
    const override = parse(await read('docker-compose.tls.yml')) as { services: Record<string, ComposeService & { secrets?: string[]; ports?: string[] }>; secrets: Record<string, { file: string }> }
    const base = parse(await read('docker-compose.yml')) as { services: Record<string, ComposeService> }
    const portico = override.services.portico
    expect(base.services.portico).toBeDefined()
    const settings = loadConfig({}, portico?.environment ?? {})
    const source = settings.tls?.source as { certFile: string; keyFile: string }
    for (const file of [source.certFile, source.keyFile]) {
      const name = file.replace('/run/secrets/', '')
      expect(portico?.secrets).toContain(name)
      expect(override.secrets[name]?.file).toMatch(/^\.\/deploy\/tls\//)
    }
    expect(portico?.ports).toContain(`${settings.port}:${settings.port}`)
    expect(settings.redirectPort).toBe(8080)
    // the key files stay out of git
    expect(await read('deploy/tls/.gitignore')).toMatch(/^\*$/m)
  })

  it('has a Dockerfile whose entrypoint is the built CLI', async () => {
    const dockerfile = await read('Dockerfile')
    expect(dockerfile).toMatch(/ENTRYPOINT \["node", "dist\/cli\.js"\]/)
    // the production runtime, both stages
    expect(dockerfile.match(/^FROM node:24-bookworm-slim/gm)).toHaveLength(2)
    expect(dockerfile).toMatch(/COPY console \.\/console/)
    expect(dockerfile).toMatch(/COPY deploy\/routes/)
  })
})

describe('Kubernetes manifests', () => {
  it('parse, and the Deployment, Service, probes and ConfigMap agree with each other', async () => {
    const docs = parseAllDocuments(await read('deploy/kubernetes/portico.yaml')).map((d) => {
      expect(d.errors).toEqual([])
      return d.toJS() as { kind: string; metadata: { name: string }; spec?: any; data?: Record<string, string>; stringData?: Record<string, string> }
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
    // the flags and variables it sets are the gateway's own
    const settings = loadConfig(flagsOf(container.args.slice(1)), Object.fromEntries(container.env.map((e: { name: string; value?: string }) => [e.name, e.value ?? 'value-from-a-secret'])))
    expect(settings.workers).toBe('auto')
    expect(settings.adminToken).toBeDefined()
    expect(container.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'admin' })
    expect(container.lifecycle.preStop.sleep.seconds + settings.shutdownDelayMs / 1000 + settings.drainTimeoutMs / 1000).toBeLessThan(deployment?.spec.template.spec.terminationGracePeriodSeconds)
    const secret = container.env.find((e: { name: string }) => e.name === 'PORTICO_ADMIN_TOKEN').valueFrom.secretKeyRef
    expect(byKind('Secret', secret.name)?.stringData?.[secret.key]).toBeTruthy()
    // TLS from the Secret portico-tls, mounted where PORTICO_TLS_DIR points; the Service's 443 reaches the TLS port
    const tls = settings.tls?.source
    expect(tls).toEqual({ dir: '/etc/portico/tls' })
    const mount = container.volumeMounts.find((m: { mountPath: string }) => m.mountPath === (tls as { dir: string }).dir)
    const volume = deployment?.spec.template.spec.volumes.find((v: { name: string }) => v.name === mount?.name)
    expect(volume?.secret?.secretName).toBe('portico-tls')
    const https = container.ports.find((p: { name: string }) => p.name === 'https')
    expect(https.containerPort).toBe(settings.port)
    expect(service?.spec.ports.find((p: { port: number }) => p.port === 443)?.targetPort).toBe('https')
    expect(container.ports.find((p: { name: string }) => p.name === 'http').containerPort).toBe(settings.redirectPort)
    const hpa = byKind('HorizontalPodAutoscaler', 'portico')
    expect(hpa?.spec.scaleTargetRef).toMatchObject({ kind: 'Deployment', name: 'portico' })
    expect(container.resources.requests.cpu).toBeDefined() // utilisation is measured against the request
    expect(byKind('PodDisruptionBudget', 'portico')?.spec.selector.matchLabels).toEqual(deployment?.spec.template.metadata.labels)
  })

  it('gives the example services a health check of their own, not the gateway image\'s', async () => {
    const compose = parse(await read('docker-compose.yml')) as { services: Record<string, { entrypoint?: string[]; environment?: Record<string, string>; healthcheck?: { test: string[] } }> }
    for (const [name, service] of Object.entries(compose.services)) {
      if (!service.entrypoint?.[1]?.startsWith('examples/')) continue
      expect(service.healthcheck?.test.join(' '), name).toContain(`127.0.0.1:${service.environment?.PORT}/health`)
    }
  })
})

/** `--name value` pairs as parseArgs would hand them over. */
function flagsOf(args: string[]): Record<string, string> {
  const flags: Record<string, string> = {}
  for (let i = 0; i < args.length; i += 2) flags[(args[i] as string).replace(/^--/, '')] = args[i + 1] as string
  return flags
}

describe('published JSON Schema', () => {
  it('is up to date with the route schema (run `npm run schema`)', async () => {
    expect(await read('schema/routes.schema.json')).toBe(publishedRouteSchema())
  })
})

describe('the Grafana dashboard and the Prometheus alert rules', () => {
  /** Every metric name the gateway exports, from its registry (histograms add _bucket, _sum and _count). */
  const exported = async (): Promise<Set<string>> => {
    const metrics = new GatewayMetrics(emptySources())
    const names = new Set<string>()
    for (const metric of await metrics.registry.getMetricsAsJSON()) {
      names.add(metric.name)
      if (String(metric.type) === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.add(metric.name + suffix)
    }
    return names
  }
  const metricNamesIn = (expr: string): string[] => [...expr.matchAll(/\b(portico_[a-z0-9_]+)/g)].map((m) => m[1] as string)

  it('uses only metrics the gateway exports, and shows what an operator asks first', async () => {
    const names = await exported()
    const dashboard = JSON.parse(await read('deploy/grafana/portico.json')) as { uid: string; panels: { title: string; targets: { expr: string }[] }[] }
    const used = dashboard.panels.flatMap((p) => p.targets.flatMap((t) => metricNamesIn(t.expr)))
    expect(used.length).toBeGreaterThan(15)
    for (const name of used) expect(names, `dashboard uses ${name}`).toContain(name)
    for (const needed of ['portico_requests_total', 'portico_gateway_errors_total', 'portico_request_duration_seconds_bucket', 'portico_circuit_breaker_state', 'portico_rate_limit_decisions_total', 'portico_discovery_instances', 'portico_shared_state_up', 'portico_discovery_stale']) {
      expect(used, `the dashboard shows ${needed}`).toContain(needed)
    }
  })

  it('has alert rules for an open breaker, shared state down, no passing instance, a stale JWKS, the 5xx ratio and certificates, on exported metrics', async () => {
    const names = await exported()
    const rules = (parse(await read('deploy/prometheus/alerts.yml')) as { groups: { rules: { alert: string; expr: string; for: string }[] }[] }).groups.flatMap((g) => g.rules)
    expect(rules.map((r) => r.alert).sort()).toEqual(['PorticoCertificateExpiresSoon', 'PorticoCertificateRefused', 'PorticoCircuitBreakerOpen', 'PorticoHigh5xxRatio', 'PorticoJwksStale', 'PorticoNoPassingInstance', 'PorticoSharedStateDown'])
    for (const rule of rules) {
      expect(rule.for).toMatch(/^\d+m$/)
      for (const name of metricNamesIn(rule.expr)) expect(names, `${rule.alert} uses ${name}`).toContain(name)
    }
    expect(rules.find((r) => r.alert === 'PorticoCircuitBreakerOpen')?.for).toBe('1m')
  })
})
