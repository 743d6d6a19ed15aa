import { RouteFileSchema } from './route-schema.js'

/** The route file schema as JSON Schema text (draft 2020-12 keywords, TypeBox's output). */
export function publishedRouteSchema(): string {
  return `${JSON.stringify({ $schema: 'http://json-schema.org/draft-07/schema#', ...RouteFileSchema }, null, 2)}\n`
}
