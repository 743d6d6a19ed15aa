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

report="$(mktemp -t portico-vitest-XXXXXX.json)"
npx vitest run --reporter=default --reporter=json --outputFile="$report" "$@"
status=$?
node -e '
  const fs = require("node:fs")
  let r
  try { r = JSON.parse(fs.readFileSync(process.argv[1], "utf8")) } catch { console.log("0 passed, 1 failed"); process.exit(0) }
  const skipped = r.numPendingTests + r.numTodoTests
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests + (r.numFailedTestSuites && !r.numFailedTests ? r.numFailedTestSuites : 0)} failed` + (skipped ? `, ${skipped} skipped` : ""))
' "$report"
rm -f "$report"
exit $status
