// Writes schema/routes.schema.json from the TypeBox schema, for editors (yaml-language-server) and other tools.
// `npm run schema` after changing src/routes/schema.ts; a test fails while the published file is out of date.
import { writeFileSync } from 'node:fs'
import { publishedRouteSchema } from '../src/routes/published-schema.js'

writeFileSync(new URL('../schema/routes.schema.json', import.meta.url), publishedRouteSchema())
