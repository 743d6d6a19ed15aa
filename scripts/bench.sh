#!/usr/bin/env bash
# `npm run bench`: builds, installs nginx (for the side-by-side) and h2load (the TLS rows' load: HTTPS and HTTP/2) from
# Debian when it can, and runs bench/run.ts.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f node_modules/.package-lock.json ] || npm ci
npm run build >/dev/null
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null 2>&1) \
      || (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null 2>&1) \
      || echo "bench: nginx could not be installed; running without it" >&2
  fi
fi
if ! command -v h2load >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nghttp2-client >/dev/null 2>&1) \
    || echo "bench: h2load could not be installed; running without the TLS rows" >&2
fi
exec npx tsx bench/run.ts
