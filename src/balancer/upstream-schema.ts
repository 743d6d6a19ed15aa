import { Type } from '@sinclair/typebox'

/** Where instances come from, in route-file form: a static list, or a Consul service (a route's, a split target's, a mirror's). */
export const upstreamsSchema = (description: string) =>
  Type.Array(
    Type.String({
      pattern: '^https?://[^/?#\\s]+/?$',
      patternMessage: 'must be an origin such as http://10.0.0.5:8080 (no path)',
    }),
    { minItems: 1, uniqueItems: true, description },
  )

export const serviceNameSchema = (description: string) =>
  Type.String({
    pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$',
    patternMessage: 'must be a Consul service name',
    description,
  })

export type UpstreamSource =
  | { readonly kind: 'static'; readonly upstreams: readonly string[] }
  | { readonly kind: 'service'; readonly service: string }

/** The source a validated `upstreams`/`service` pair names (exactly one is set; the caller checked). */
export function toUpstreamSource(spec: { readonly upstreams?: readonly string[] | undefined; readonly service?: string | undefined }): UpstreamSource {
  return spec.service !== undefined ? { kind: 'service', service: spec.service } : { kind: 'static', upstreams: (spec.upstreams ?? []).map((u) => u.replace(/\/$/, '')) }
}
