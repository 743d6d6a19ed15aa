#!/usr/bin/env bash
# Builds a pinned Consul agent from its Go module, for tests and local development.
# Consul is in neither Debian nor npm and there is no Docker engine on our machines, but the Go module proxy is reachable.
# `go install …@version` refuses modules with replace directives, so: download the module, drop the local replaces of
# its sub-modules (they then resolve to their published versions), and build.
# Prints the binary's path on its last line. CONSUL_BIN or a `consul` on PATH wins over building.
set -euo pipefail

CONSUL_VERSION="${CONSUL_VERSION:-v1.20.6}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${PORTICO_CACHE_DIR:-$root/.cache}"
bin="$cache/consul-$CONSUL_VERSION"

if [ -n "${CONSUL_BIN:-}" ] && [ -x "$CONSUL_BIN" ]; then echo "$CONSUL_BIN"; exit 0; fi
if command -v consul >/dev/null 2>&1; then command -v consul; exit 0; fi
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi

command -v go >/dev/null 2>&1 || { echo "install-consul: Go is needed to build Consul (none on PATH)" >&2; exit 1; }
mkdir -p "$cache"
work="$(mktemp -d "$cache/consul-build.XXXXXX")"
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

echo "install-consul: downloading github.com/hashicorp/consul@$CONSUL_VERSION" >&2
cd "$work"
export GOFLAGS="-mod=mod -buildvcs=false"
moddir="$(go mod download -json "github.com/hashicorp/consul@$CONSUL_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
[ -d "$moddir" ] || { echo "install-consul: go mod download gave no module directory" >&2; exit 1; }
cp -r "$moddir" src
chmod -R u+w src
cd src
for sub in api sdk proto-public envoyextensions troubleshoot; do
  if grep -q "github.com/hashicorp/consul/$sub => ./$sub" go.mod; then
    go mod edit -dropreplace="github.com/hashicorp/consul/$sub"
  fi
done
echo "install-consul: building (takes several minutes the first time)…" >&2
go build -v -o "$bin.tmp" . 2>&1 | awk '{ n++ } n % 100 == 0 { printf "install-consul: %d packages compiled\n", n > "/dev/stderr" }'
[ -x "$bin.tmp" ] || { echo "install-consul: go build produced no binary" >&2; exit 1; }
mv "$bin.tmp" "$bin"
echo "install-consul: built $("$bin" version | head -1)" >&2
echo "$bin"
