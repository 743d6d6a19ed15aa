import type { ChildProcess } from 'node:child_process'

/** Kills a test server outright (a crash, not a shutdown) and resolves once it is gone. */
export async function kill(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGKILL')
  await exited
}
