/** A one-route file; `extra` lines (already indented by four spaces) add keys to the route. */
export function routeFile(name: string, prefix: string, upstreams: string | readonly string[], ...extra: string[]): string {
  const list = typeof upstreams === 'string' ? [upstreams] : upstreams
  return `routes:\n  - name: ${name}\n    prefix: ${prefix}\n    upstreams: [${list.join(', ')}]\n${extra.map((line) => `    ${line}\n`).join('')}`
}
