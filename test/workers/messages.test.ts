import { describe, expect, it } from 'vitest'
import { parsePrimaryMessage, parseWorkerMessage } from '../../src/workers/messages.js'

describe('messages between the primary and its workers', () => {
  it('reads what a worker sends, and nothing else that shares the channel', () => {
    expect(parseWorkerMessage({ portico: 'ready', url: 'http://127.0.0.1:1', adminUrl: 'http://127.0.0.1:2' })).toEqual({ portico: 'ready', url: 'http://127.0.0.1:1', adminUrl: 'http://127.0.0.1:2' })
    expect(parseWorkerMessage({ portico: 'follow', services: ['orders'] })).toEqual({ portico: 'follow', services: ['orders'] })
    expect(parseWorkerMessage({ portico: 'table?' })).toEqual({ portico: 'table?' })
    for (const junk of [undefined, null, 'ready', 42, [], { portico: 'ready', url: 1 }, { portico: 'follow', services: 'orders' }, { portico: 'follow', services: [1] }, { type: 'prom-client:getMetricsReq' }, { portico: 'retire' }])
      expect(parseWorkerMessage(junk)).toBeUndefined()
  })

  it('reads what the primary sends, and nothing else', () => {
    expect(parsePrimaryMessage({ portico: 'retire' })).toEqual({ portico: 'retire' })
    expect(parsePrimaryMessage({ portico: 'discovery', instances: {}, health: { status: 'ok' } })?.portico).toBe('discovery')
    expect(parsePrimaryMessage({ portico: 'table', table: { routes: [], sources: [], version: 1 } })?.portico).toBe('table')
    for (const junk of [undefined, 'retire', { portico: 'discovery', instances: {} }, { portico: 'table' }, { portico: 'ready', url: 'x', adminUrl: 'y' }])
      expect(parsePrimaryMessage(junk)).toBeUndefined()
  })
})
