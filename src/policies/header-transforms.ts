import { CONSUMER } from './caller-key.js'
import { Type, type Static, type TObject } from '@sinclair/typebox'
import { schemaDefaults } from '../kernel/schema-defaults.js'
import type { PolicyExchange } from './policy.js'

const HEADER_NAME = "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"
// Visible ASCII, spaces and tabs: a value may not end a header line or start another.
const HEADER_VALUE = '^[\\t\\x20-\\x7e]*$'

const Values = (description: string) =>
  Type.Record(Type.String({ pattern: HEADER_NAME }), Type.String({ pattern: HEADER_VALUE, patternMessage: 'must be visible ASCII (no line breaks)' }), { default: {}, additionalProperties: false, description })

/** The schema of a route-file key of header transforms (`set`, `add`, `remove`), in the words of its direction. */
export function headerTransformsSchema(words: { set: string; add: string; remove: string; description: string }) {
  return Type.Object(
    {
      set: Type.Optional(Values(words.set)),
      add: Type.Optional(Values(words.add)),
      remove: Type.Optional(Type.Array(Type.String({ pattern: HEADER_NAME, patternMessage: 'must be a header name' }), { uniqueItems: true, default: [], description: words.remove })),
    },
    { additionalProperties: false, description: words.description },
  )
}

export type HeaderTransformsSchema = ReturnType<typeof headerTransformsSchema>
export type HeaderTransformsSpec = Static<HeaderTransformsSchema>

/** A value as the request makes it: literal text and variables, joined. */
export type HeaderTemplate = readonly (string | { readonly variable: TemplateVariable } | { readonly header: string })[]

const VARIABLES = ['requestId', 'clientIp', 'route', 'consumer'] as const
type TemplateVariable = (typeof VARIABLES)[number]
const isVariable = (name: string): name is TemplateVariable => (VARIABLES as readonly string[]).includes(name)

export interface HeaderTransforms {
  /** Lower-case names. */
  readonly set: ReadonlyMap<string, HeaderTemplate>
  readonly add: ReadonlyMap<string, HeaderTemplate>
  readonly remove: readonly string[]
}

const VARIABLE = /\$\{([^}]*)\}/g

/** A template's parts, or why the text is not one. */
function parseTemplate(text: string): HeaderTemplate | string {
  const parts: (string | { variable: TemplateVariable } | { header: string })[] = []
  let from = 0
  for (const match of text.matchAll(VARIABLE)) {
    if (match.index > from) parts.push(text.slice(from, match.index))
    const name = match[1] as string
    if (isVariable(name)) parts.push({ variable: name })
    else if (/^header:[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(name)) parts.push({ header: name.slice('header:'.length).toLowerCase() })
    else return `\${${name}} is not a variable (there are \${requestId}, \${clientIp}, \${route}, \${consumer} and \${header:Name})`
    from = match.index + match[0].length
  }
  if (from < text.length) parts.push(text.slice(from))
  return parts
}

/**
 * The transforms of `spec` under route-file key `key`, or the sentence that refuses them: a header of `untouchable`
 * (the message's framing, the connection: the gateway's and node's) may not be named, nor one header twice.
 */
export function toHeaderTransforms(schema: TObject, spec: HeaderTransformsSpec, key: string, untouchable: ReadonlySet<string>): HeaderTransforms | string {
  const defaults = schemaDefaults(schema as HeaderTransformsSchema, ['set', 'add', 'remove'])
  const templates = (values: Readonly<Record<string, string>>, what: string): Map<string, HeaderTemplate> | string => {
    const compiled = new Map<string, HeaderTemplate>()
    for (const [name, text] of Object.entries(values)) {
      const lower = name.toLowerCase()
      if (untouchable.has(lower)) return `${key}.${what}: ${name} is the gateway's to send and cannot be ${what === 'set' ? 'set' : 'added to'}`
      const template = parseTemplate(text)
      if (typeof template === 'string') return `${key}.${what}.${name}: ${template}`
      compiled.set(lower, template)
    }
    return compiled
  }
  const set = templates(spec.set ?? defaults.set, 'set')
  if (typeof set === 'string') return set
  const add = templates(spec.add ?? defaults.add, 'add')
  if (typeof add === 'string') return add
  const remove = (spec.remove ?? defaults.remove).map((name) => name.toLowerCase())
  const refused = remove.find((name) => untouchable.has(name))
  if (refused !== undefined) return `${key}.remove: ${refused} is the gateway's to send and cannot be removed`
  const twice = [...set.keys()].find((name) => add.has(name) || remove.includes(name)) ?? [...add.keys()].find((name) => remove.includes(name))
  if (twice !== undefined) return `${key}: ${twice} is named in more than one of set, add and remove`
  return { set, add, remove }
}

/** A template's text for one request. */
export function render(template: HeaderTemplate, ex: PolicyExchange, route: string): string {
  let text = ''
  for (const part of template) {
    if (typeof part === 'string') text += part
    else if ('header' in part) {
      const value = ex.request.headers[part.header]
      text += Array.isArray(value) ? value.join(', ') : (value ?? '')
    } else text += variableValue(part.variable, ex, route)
  }
  return text
}

function variableValue(variable: TemplateVariable, ex: PolicyExchange, route: string): string {
  switch (variable) {
    case 'requestId':
      return ex.request.id
    case 'clientIp':
      return ex.request.ip
    case 'route':
      return route
    case 'consumer':
      // Empty without a consumer: on a route without auth, or one auth let through without naming one.
      return ex.get(CONSUMER) ?? ''
  }
}

/** Applies `transforms` through `get`/`put` (undefined removes): removals, then sets, then appends. */
export function applyTransforms(transforms: HeaderTransforms, ex: PolicyExchange, route: string, get: (name: string) => string | number | string[] | undefined, put: (name: string, value: string | undefined) => void): void {
  for (const name of transforms.remove) put(name, undefined)
  for (const [name, template] of transforms.set) put(name, render(template, ex, route))
  for (const [name, template] of transforms.add) {
    const current = get(name)
    const value = render(template, ex, route)
    put(name, current === undefined ? value : `${Array.isArray(current) ? current.join(', ') : current}, ${value}`)
  }
}
