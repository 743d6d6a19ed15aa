// Writes schema/routes.schema.json from the TypeBox schema, for editors (yaml-language-server) and other tools.
// `npm run schema` after changing src/config/route-schema.ts (or a policy schema); a test fails while the published file is out of date.
import { writeFileSync } from 'node:fs'
import { publishedRouteSchema } from '../src/config/published-schema.js'

writeFileSync(new URL('../schema/routes.schema.json', import.meta.url), publishedRouteSchema())
