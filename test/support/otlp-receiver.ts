import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

/** A span as an OTLP/HTTP JSON export carries it (ids in hex), with its attributes flattened. */
export interface ReceivedSpan {
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId: string
  readonly name: string
  /** 1 internal, 2 server, 3 client. */
  readonly kind: number
  readonly status: { code?: number; message?: string }
  readonly attributes: Record<string, string | number | boolean>
  readonly resource: Record<string, string | number | boolean>
}

export interface OtlpReceiver {
  /** The base URL, as OTEL_EXPORTER_OTLP_ENDPOINT takes it. */
  readonly url: string
  readonly spans: ReceivedSpan[]
  close(): Promise<void>
}

interface AnyValue {
  stringValue?: string
  intValue?: string | number
  boolValue?: boolean
  doubleValue?: number
}
type KeyValues = { key: string; value: AnyValue }[]

const flatten = (attributes: KeyValues = []) =>
  Object.fromEntries(attributes.map(({ key, value }) => [key, value.stringValue ?? (value.intValue !== undefined ? Number(value.intValue) : (value.boolValue ?? value.doubleValue ?? ''))]))

/** An OTLP/HTTP receiver for traces (POST /v1/traces, JSON), on 127.0.0.1: what a collector would get. */
export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = []
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      if (req.method !== 'POST' || req.url !== '/v1/traces' || !String(req.headers['content-type']).startsWith('application/json')) {
        res.writeHead(415).end()
        return
      }
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
        resourceSpans: { resource?: { attributes?: KeyValues }; scopeSpans: { spans: (Omit<ReceivedSpan, 'attributes' | 'resource' | 'parentSpanId'> & { parentSpanId?: string; attributes?: KeyValues })[] }[] }[]
      }
      for (const { resource, scopeSpans } of body.resourceSpans) {
        for (const { spans: received } of scopeSpans) {
          for (const span of received) spans.push({ ...span, parentSpanId: span.parentSpanId ?? '', status: span.status ?? {}, attributes: flatten(span.attributes), resource: flatten(resource?.attributes) })
        }
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    spans,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}
