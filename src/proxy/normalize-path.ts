/**
 * Brings a request path to the one spelling that is matched and forwarded, so that no other spelling of a path
 * reaches an upstream its prefix would not allow: `%2e`/`%2f`/`%5c` are decoded, backslashes count as slashes,
 * duplicate slashes are merged, and `.`/`..` segments are resolved (never above the root).
 * Encoded slashes become real ones on purpose: an upstream that decodes them would otherwise see a path the
 * gateway never matched. Returns undefined for a path that cannot be routed safely (NUL, not absolute, bad escape).
 */
export function normalizePath(rawPath: string): string | undefined {
  if (rawPath.charCodeAt(0) !== 47 /* / */) return undefined
  if (!NEEDS_WORK.test(rawPath)) return rawPath

  let path: string
  try {
    path = rawPath.replace(/%(2e|2f|5c|00)/gi, (escape) => {
      const decoded = decodeURIComponent(escape)
      if (decoded === '\0') throw new Error('NUL in path')
      return decoded
    })
  } catch {
    return undefined
  }
  if (/%(?![0-9a-f]{2})/i.test(path)) return undefined
  path = path.replaceAll('\\', '/')

  const out: string[] = []
  const segments = path.split('/')
  for (let i = 1; i < segments.length; i++) {
    const segment = segments[i] as string
    const last = i === segments.length - 1
    if (segment === '..') {
      out.pop()
      if (last) out.push('')
    } else if (segment === '.' || (segment === '' && !last)) {
      if (last) out.push('')
    } else {
      out.push(segment)
    }
  }
  return '/' + out.join('/')
}

// Cheap pre-check: most paths have nothing to normalise, and the hot path should not split them.
const NEEDS_WORK = /%|\\|\/\/|\/\.\.?(\/|$)/
