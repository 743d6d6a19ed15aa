import { describe, expect, it } from 'vitest'
import type { RouteSource } from '../../src/config/merge-sources.js'
import type { RouteDefinition } from '../../src/config/parse-route-file.js'
import type { RouteProvider } from '../../src/config/providers/provider.js'
import { RouteWatcher } from '../../src/config/route-watcher.js'
import { createLogger } from '../../src/server.js'
import { waitFor } from '../support/poll.js'
import { routeFile } from '../support/routes.js'

/** A provider the test drives: start() emits the first snapshot; emit() pushes the next. */
function fakeProvider(first: RouteSource[]): RouteProvider & { emit(sources: RouteSource[]): void } {
  let push: ((sources: RouteSource[]) => void) | undefined
  return {
    name: 'fake',
    async start(emit) {
      push = emit
      emit(first)
    },
    emit: (sources) => push?.(sources),
  }
}

const good = (name: string) => ({ source: `${name}.yaml`, text: routeFile(name, `/${name}`, 'http://127.0.0.1:9') })

describe('RouteWatcher (fake provider)', () => {
  const make = (provider: RouteProvider) => new RouteWatcher({ providers: [provider], compile: (routes) => ({ routes, commit: () => undefined }), debounceMs: 0, logger: createLogger('silent') })

  it('applies the first snapshot on start, then each change', async () => {
    const provider = fakeProvider([good('a')])
    const watcher = make(provider)
    await watcher.start()
    expect(watcher.current().table.routes.map((r) => r.name)).toEqual(['a'])
    provider.emit([good('a'), good('b')])
    await waitFor(() => watcher.current().version === 2, { what: 'the second table' })
    expect(watcher.current().table.routes.map((r) => r.name)).toEqual(['a', 'b'])
    watcher.stop()
  })

  it('keeps the last good version of a source that turns bad, and skips a snapshot equal to the live one', async () => {
    const provider = fakeProvider([good('a')])
    const watcher = make(provider)
    await watcher.start()
    provider.emit([{ source: 'a.yaml', text: 'routes: *nope\n' }])
    await waitFor(() => watcher.current().sources[0]?.state === 'last-good', { what: 'the bad source to be refused' })
    expect(watcher.current().table.routes.map((r) => r.name)).toEqual(['a'])
    expect(watcher.current().sources[0]?.errors[0]).toMatchObject({ file: 'a.yaml', line: 1 })
    const version = watcher.current().version
    provider.emit([{ source: 'a.yaml', text: 'routes: *nope\n' }])
    provider.emit([good('a')])
    await waitFor(() => watcher.current().sources[0]?.state === 'applied', { what: 'the fixed source' })
    expect(watcher.current().version).toBe(version + 1)
    watcher.stop()
  })

  it('keeps the live table when compiling the new one throws', async () => {
    const provider = fakeProvider([good('a')])
    const compiled: string[] = []
    const watcher = new RouteWatcher({
      providers: [provider],
      compile: (definitions) => {
        compiled.push(definitions.map((d) => d.name).join(','))
        if (definitions.some((d) => d.name === 'b')) throw new Error('boom')
        return { routes: definitions, commit: () => undefined }
      },
      debounceMs: 0,
      logger: createLogger('silent'),
    })
    await watcher.start()
    provider.emit([good('b')])
    await waitFor(() => compiled.includes('b'), { what: 'the failing compile' })
    expect(watcher.current().table.routes.map((r) => r.name)).toEqual(['a'])
    provider.emit([good('d')])
    await waitFor(() => watcher.current().table.routes[0]?.name === 'd', { what: 'the next good table' })
    watcher.stop()
  })

  it('commits a table once it is live, never one that could not be built', async () => {
    const provider = fakeProvider([good('a')])
    // What was live when each commit ran.
    const liveAtCommit: string[] = []
    const attempted: string[] = []
    const watcher: RouteWatcher<RouteDefinition> = new RouteWatcher<RouteDefinition>({
      providers: [provider],
      compile: (definitions) => {
        attempted.push(definitions.map((d) => d.name).join(','))
        if (definitions.some((d) => d.name === 'bad')) throw new Error('boom')
        return { routes: definitions, commit: () => void liveAtCommit.push(watcher.current().table.routes.map((r) => r.name).join(',')) }
      },
      debounceMs: 0,
      logger: createLogger('silent'),
    })
    await watcher.start()
    provider.emit([good('bad')])
    await waitFor(() => attempted.includes('bad'), { what: 'the failing compile' })
    provider.emit([good('c')])
    await waitFor(() => watcher.current().table.routes[0]?.name === 'c', { what: 'the next good table' })
    expect(liveAtCommit).toEqual(['a', 'c'])
    watcher.stop()
  })
})
