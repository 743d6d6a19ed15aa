#!/usr/bin/env bash
# `npm test`: sets up what the suite needs on a fresh machine (dependencies, redis-server, Chromium, a Consul agent
# built from source), runs vitest, and closes with a plain "N passed, N failed" line from vitest's JSON report.
# The tests start their own redis-server and Consul agent on free ports; nothing here touches a running service.
set -uo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }

[ -f node_modules/.package-lock.json ] || npm ci || exit 1

if ! command -v redis-server >/dev/null 2>&1; then
  echo "test: installing redis-server from Debian" >&2
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null || {
    echo "test: redis-server is missing and could not be installed" >&2; exit 1; }
fi

# The status page's test drives Debian's Chromium through playwright-core.
if [ ! -x "${CHROMIUM_BIN:-/usr/bin/chromium}" ]; then
  echo "test: installing chromium from Debian (the status page's browser test)" >&2
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || {
    echo "test: chromium is missing and could not be installed" >&2; exit 1; }
fi

CONSUL_BIN="$(bash scripts/install-consul.sh | tail -n 1)" || { echo "test: no Consul agent (see scripts/install-consul.sh)" >&2; exit 1; }
export CONSUL_BIN

# The suite runs on the machine's Node and on Node 24 LTS, the production runtime (PORTICO_TEST_NODES=current runs the
# first only). The closing line sums both runs.
runtimes=("")
if [ "${PORTICO_TEST_NODES:-all}" != current ] && [ "$(node -p 'process.versions.node.split(".")[0]')" != 24 ]; then
  node24="$(bash scripts/install-node24.sh | tail -n 1)" || { echo "test: Node 24 could not be installed" >&2; exit 1; }
  runtimes+=("$node24")
fi

status=0
reports=()
for bin in "${runtimes[@]}"; do
  report="$(mktemp -t portico-vitest-XXXXXX.json)"
  reports+=("$report")
  echo "test: the suite on Node $(PATH="${bin:+$bin:}$PATH" node -v)" >&2
  PATH="${bin:+$bin:}$PATH" npx vitest run --reporter=default --reporter=json --outputFile="$report" "$@" || status=1
done
node -e '
  const fs = require("node:fs")
  let passed = 0, failed = 0, skipped = 0
  for (const file of process.argv.slice(1)) {
    let r
    try { r = JSON.parse(fs.readFileSync(file, "utf8")) } catch { failed++; continue }
    passed += r.numPassedTests
    failed += r.numFailedTests + (r.numFailedTestSuites && !r.numFailedTests ? r.numFailedTestSuites : 0)
    skipped += r.numPendingTests + r.numTodoTests
  }
  console.log(`${passed} passed, ${failed} failed` + (skipped ? `, ${skipped} skipped` : ""))
' "${reports[@]}"
rm -f "${reports[@]}"
exit $status
