import type { ConsumerDefinition } from '../consumers.js'

/** An auth method, as the route's metrics and its access log name it. */
export type AuthMethod = 'api_key' | 'jwt' | 'forward'

/** What one method made of a request. */
export type Verdict =
  /** The request carries no credential of this method; `challenge` is its WWW-Authenticate. */
  | { readonly kind: 'absent'; readonly challenge: string | undefined }
  /** Let through: a known consumer, or an anonymous one named by `name`; `headers` go upstream (lower-case names). */
  | { readonly kind: 'admitted'; readonly method: AuthMethod; readonly outcome?: string; readonly consumer: ConsumerDefinition | undefined; readonly name: string | undefined; readonly headers: readonly (readonly [string, string])[] }
  /** A credential was offered and is not good: 401 with `challenge`; `outcome` is what the metrics count. */
  | { readonly kind: 'refused'; readonly method: AuthMethod; readonly outcome: string; readonly detail: string; readonly challenge: string | undefined }
  /** The forward-auth service said no: its answer goes to the client as it came. */
  | { readonly kind: 'answered'; readonly method: AuthMethod; readonly status: number; readonly headers: Readonly<Record<string, string | string[]>>; readonly body: Buffer }
  /** The method could not decide (its service or key set is unreachable): 503. */
  | { readonly kind: 'unavailable'; readonly method: AuthMethod; readonly detail: string }
