import { createRequire } from 'node:module'
import { describe, expect, it } from 'vitest'
import { normalizePath } from '../../src/proxy/normalize-path.js'
import { engineCanSend } from '../../src/proxy/send.js'

// reply-from's own URL builder: the request path's check must agree with it, or a path it refuses reaches an attempt.
const { buildURL } = createRequire(import.meta.url)('@fastify/reply-from/lib/utils.js') as { buildURL: (source: string, base: string) => URL }
const engineSends = (path: string): boolean => {
  try {
    buildURL(path, 'http://127.0.0.1:8080')
    return true
  } catch {
    return false
  }
}

describe('engineCanSend', () => {
  const segments = ['a', '.', '..', '...', '..;', ';..', 'a..', '..a', '%2e%2e', '%2E.', '.%2e', '%C3%A9', '%C3%28', '%E0%A4%A', '%FF', '[...slug]', 'x..y', '~', '']
  const paths = segments.flatMap((s) => segments.map((t) => `/${s}/${t}`)).flatMap((p) => [p, `${p}/`, `/v1${p}`])

  it('agrees with reply-from on every normalised path of a table of awkward segments', () => {
    let checked = 0
    for (const raw of paths) {
      const path = normalizePath(raw)
      if (path === undefined) continue
      expect(engineCanSend(path), path).toBe(engineSends(path))
      checked++
    }
    expect(checked).toBeGreaterThan(500)
  })
})
