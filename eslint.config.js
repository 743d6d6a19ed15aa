import tseslint from 'typescript-eslint'

/**
 * The import direction of src/ (see the README's Layout): each folder may import only the folders below it, so there
 * are no folder cycles. kernel ← balancer, state, discovery, http ← policies ← config ← proxy ← admin, observability ←
 * server, cli, workers; tls ← server (it takes only kernel). register (the SDK) takes only kernel and discovery's Consul client.
 */
const layer = (files, forbidden, message) => ({
  files,
  rules: {
    'no-restricted-imports': ['error', { patterns: forbidden.map((regex) => ({ regex, message })) }],
  },
})
const above = (...folders) => `(^|/)(${folders.join('|')})/`
const ROOT = '^(\\.\\./)+(server\\.js|cli\\.js|workers/)'

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', '.cache/', 'coverage/', '.scratch/'] },
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
  layer(['src/kernel/**'], ['^\\.\\./', '^fastify$'], 'src/kernel imports nothing from src/ and no fastify types.'),
  layer(['src/balancer/**', 'src/state/**', 'src/http/**'], [above('config', 'policies', 'proxy', 'admin', 'observability', 'discovery', 'register'), ROOT], 'this layer imports only src/kernel.'),
  layer(['src/discovery/**'], [above('config', 'policies', 'proxy', 'admin', 'observability', 'state', 'http', 'register'), ROOT], 'src/discovery imports only kernel and balancer.'),
  layer(['src/policies/**'], [above('config', 'proxy', 'admin', 'observability', 'discovery', 'http', 'register'), ROOT, '^fastify$', '^@fastify/'], 'src/policies imports only kernel, balancer and state, and no framework types (PolicyRequest and PolicyReply are what a policy sees).'),
  layer(['src/config/**'], [above('proxy', 'admin', 'observability', 'state', 'http', 'register'), ROOT], 'src/config imports only kernel, balancer, policies and discovery.'),
  layer(['src/proxy/**'], [above('admin', 'observability', 'register'), ROOT], 'src/proxy imports nothing from admin, observability, register or the root.'),
  layer(['src/admin/**', 'src/observability/**'], [above('register'), ROOT], 'admin and observability do not import the root.'),
  layer(['src/tls/**'], [above('config', 'policies', 'proxy', 'admin', 'observability', 'discovery', 'state', 'http', 'balancer', 'register'), ROOT], 'src/tls (certificates and the TLS listener) imports only src/kernel.'),
  layer(['src/register/**'], [above('config', 'policies', 'proxy', 'admin', 'observability', 'state', 'http', 'balancer'), ROOT, '(^|/)discovery/(?!consul-client\\.js$)'], 'the register SDK imports only kernel and discovery/consul-client.'),
)
