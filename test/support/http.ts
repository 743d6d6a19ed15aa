import { request } from 'undici'

/** One request through a gateway: status, headers, body text, and the problem code when the gateway refused it. */
export async function answer(url: string, init: Parameters<typeof request>[1] = {}) {
  const response = await request(url, init)
  const text = await response.body.text()
  const problem = response.headers['content-type']?.toString().startsWith('application/problem+json') ? (JSON.parse(text) as { code: string }) : undefined
  return { status: response.statusCode, headers: response.headers, text, code: problem?.code }
}
