import { Type, type Static } from '@sinclair/typebox'
import { schemaDefaults } from '../../kernel/schema-defaults.js'

const HEADER_NAME = "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"
// Visible ASCII, spaces and tabs: a value may not end a header line or start another.
const HEADER_VALUE = '^[\\t\\x20-\\x7e]*$'

const Values = (description: string) =>
  Type.Record(Type.String({ pattern: HEADER_NAME }), Type.String({ pattern: HEADER_VALUE, patternMessage: 'must be visible ASCII (no line breaks)' }), { default: {}, additionalProperties: false, description })

export const RequestHeadersSchema = Type.Object(
  {
    set: Type.Optional(Values('Headers sent upstream with these values, whatever the client sent under those names.')),
    add: Type.Optional(Values('Values appended to the header of that name (after a comma), or the header when there is none.')),
    remove: Type.Optional(
      Type.Array(Type.String({ pattern: HEADER_NAME, patternMessage: 'must be a header name' }), { uniqueItems: true, default: [], description: 'Headers never sent upstream, the client\'s included.' }),
    ),
  },
  {
    additionalProperties: false,
    description:
      'Header transforms on the way in, applied after the gateway\'s own forwarding headers. Values may hold ${requestId}, ${clientIp}, ${route} and ${header:Name} (the client\'s header). Host, Content-Length and hop-by-hop headers cannot be set or removed.',
  },
)

export type RequestHeadersSpec = Static<typeof RequestHeadersSchema>

/** A value as the request makes it: literal text and variables, joined. */
export type HeaderTemplate = readonly (string | { readonly variable: 'requestId' | 'clientIp' | 'route' } | { readonly header: string })[]

export interface RequestHeadersConfig {
  /** Lower-case names. */
  readonly set: ReadonlyMap<string, HeaderTemplate>
  readonly add: ReadonlyMap<string, HeaderTemplate>
  readonly remove: readonly string[]
}

// What a transform may not touch: the message's framing and the connection are the gateway's and node's.
const UNTOUCHABLE = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'expect'])
const VARIABLE = /\$\{([^}]*)\}/g
const DEFAULTS = schemaDefaults(RequestHeadersSchema, ['set', 'add', 'remove'])

/** A template's parts, or why the text is not one. */
function parseTemplate(text: string): HeaderTemplate | string {
  const parts: (string | { variable: 'requestId' | 'clientIp' | 'route' } | { header: string })[] = []
  let from = 0
  for (const match of text.matchAll(VARIABLE)) {
    if (match.index > from) parts.push(text.slice(from, match.index))
    const name = match[1] as string
    if (name === 'requestId' || name === 'clientIp' || name === 'route') parts.push({ variable: name })
    else if (/^header:[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(name)) parts.push({ header: name.slice('header:'.length).toLowerCase() })
    else return `\${${name}} is not a variable (there are \${requestId}, \${clientIp}, \${route} and \${header:Name})`
    from = match.index + match[0].length
  }
  if (from < text.length) parts.push(text.slice(from))
  return parts
}

export function toRequestHeadersConfig(spec: RequestHeadersSpec): RequestHeadersConfig | string {
  const templates = (values: Readonly<Record<string, string>>, what: string): Map<string, HeaderTemplate> | string => {
    const compiled = new Map<string, HeaderTemplate>()
    for (const [name, text] of Object.entries(values)) {
      const lower = name.toLowerCase()
      if (UNTOUCHABLE.has(lower)) return `requestHeaders.${what}: ${name} is the gateway's to send and cannot be ${what === 'set' ? 'set' : 'added to'}`
      const template = parseTemplate(text)
      if (typeof template === 'string') return `requestHeaders.${what}.${name}: ${template}`
      compiled.set(lower, template)
    }
    return compiled
  }
  const set = templates(spec.set ?? DEFAULTS.set, 'set')
  if (typeof set === 'string') return set
  const add = templates(spec.add ?? DEFAULTS.add, 'add')
  if (typeof add === 'string') return add
  const remove = (spec.remove ?? DEFAULTS.remove).map((name) => name.toLowerCase())
  const untouchable = remove.find((name) => UNTOUCHABLE.has(name))
  if (untouchable !== undefined) return `requestHeaders.remove: ${untouchable} is the gateway's to send and cannot be removed`
  const twice = [...set.keys()].find((name) => add.has(name) || remove.includes(name)) ?? [...add.keys()].find((name) => remove.includes(name))
  if (twice !== undefined) return `requestHeaders: ${twice} is named in more than one of set, add and remove`
  return { set, add, remove }
}
