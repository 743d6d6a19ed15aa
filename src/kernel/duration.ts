const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const

export const DURATION_PATTERN = '^[0-9]+(\\.[0-9]+)?(ms|s|m|h)$'
const durationRe = new RegExp(DURATION_PATTERN)

/** Parses `500ms`, `5s`, `1.5m`, `1h` into milliseconds; throws on anything else. */
export function parseDuration(text: string): number {
  const match = durationRe.exec(text)
  if (!match) throw new TypeError(`"${text}" is not a duration (use e.g. 500ms, 5s, 1m, 1h)`)
  return Math.round(Number.parseFloat(text) * UNIT_MS[match[2] as keyof typeof UNIT_MS])
}
