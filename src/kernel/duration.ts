const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const

export const DURATION_PATTERN = '^[0-9]+(\\.[0-9]+)?(ms|s|m|h)$'
const durationRe = new RegExp(DURATION_PATTERN)

/** Parses `500ms`, `5s`, `1.5m`, `1h` into milliseconds; throws on anything else. */
export function parseDuration(text: string): number {
  const match = durationRe.exec(text)
  if (!match) throw new TypeError(`"${text}" is not a duration (use e.g. 500ms, 5s, 1m, 1h)`)
  return Math.round(Number.parseFloat(text) * UNIT_MS[match[2] as keyof typeof UNIT_MS])
}

export const SIZE_PATTERN = '^[0-9]+(b|kb|mb|gb)?$'
const sizeRe = new RegExp(SIZE_PATTERN, 'i')
const UNIT_BYTES = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3 } as const

/** Parses `1048576`, `512kb`, `10mb` into bytes; throws on anything else. */
export function parseSize(text: string): number {
  const match = sizeRe.exec(text)
  if (!match) throw new TypeError(`"${text}" is not a size (use e.g. 1048576, 512kb, 10mb)`)
  return Number.parseInt(text, 10) * UNIT_BYTES[(match[1] ?? 'b').toLowerCase() as keyof typeof UNIT_BYTES]
}
