/** The sum of a traffic history series over its window (a slot it does not know counts nothing). */
export const windowTotal = (values: readonly (number | null)[] | undefined): number => (values ?? []).reduce<number>((sum, n) => sum + (n ?? 0), 0)
