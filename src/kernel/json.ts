/**
 * The fields of a JSON object from text anyone could have written (a Redis peer, a pub/sub channel); undefined for
 * anything else. Never throws: such text is input like any other, checked field by field by the caller.
 */
export function parseJsonObject(text: string): Record<string, unknown> | undefined {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return undefined
  }
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined
}
