import type { Static, TObject } from '@sinclair/typebox'

/**
 * The `default` a schema publishes for each of `keys`, typed. A default is written once, in the schema (editors and the
 * published JSON Schema show it), and a `toConfig` applies it from here. A key without one fails when the module
 * loads, not on a request.
 */
export function schemaDefaults<T extends TObject, K extends keyof Static<T> & string>(schema: T, keys: readonly K[]): { readonly [P in K]-?: Exclude<Static<T>[P], undefined> } {
  const defaults: Record<string, unknown> = {}
  for (const key of keys) {
    const value = (schema.properties[key] as { default?: unknown } | undefined)?.default
    if (value === undefined) throw new Error(`the schema publishes no default for "${key}"`)
    defaults[key] = value
  }
  return defaults as { readonly [P in K]-?: Exclude<Static<T>[P], undefined> }
}
