import { Type } from '@sinclair/typebox'
import { describe, expect, it } from 'vitest'
import { schemaDefaults } from '../../src/kernel/schema-defaults.js'
import { POLICIES } from '../../src/policies/index.js'
import { RetrySchema } from '../../src/policies/retry/schema.js'

describe('schemaDefaults', () => {
  it('reads the defaults a schema publishes, and refuses a key without one when the module loads', () => {
    const schema = Type.Object({ tries: Type.Optional(Type.Integer({ default: 3 })), name: Type.Optional(Type.String()) })
    expect(schemaDefaults(schema, ['tries'])).toEqual({ tries: 3 })
    expect(() => schemaDefaults(schema, ['name'])).toThrow('the schema publishes no default for "name"')
  })

  it('is where a policy\'s config gets what its published schema says: an empty spec is the schema\'s defaults', () => {
    const retry = POLICIES.find((kind) => kind.key === 'retry')
    const published = RetrySchema.properties
    expect(retry?.toConfig({})).toMatchObject({ attempts: published.attempts.default, budgetPercent: published.budgetPercent.default, methods: new Set(published.methods.default as string[]) })
  })
})
