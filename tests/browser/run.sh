#!/usr/bin/env bash
# Browser tests of the Agora web UI (@playwright/test) against a real `agora up`.
#
#   tests/browser/run.sh [path/to/agora] [playwright test options…]   (default: target/debug/agora)
#
# Installs Debian's chromium (apt) when it is missing and the npm packages
# (npm ci, no browser download), then runs `playwright test`: its global setup
# (agora.mjs) starts the binary on a free port with a throw-away data directory
# and stops it after the tests, failing if any `agora serve` child outlives it.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
AGORA="${1:-$ROOT/target/debug/agora}"
shift || true

log() { printf '[run.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ -x "$AGORA" ]] || die "no agora binary at $AGORA (build it: cargo build -p agora)"
AGORA="$(cd "$(dirname "$AGORA")" && pwd)/$(basename "$AGORA")"

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

if [[ ! -x /usr/bin/chromium ]]; then
  log "installing chromium (apt)"
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi
command -v node >/dev/null || die "node is not installed (need Node.js >= 20)"
# npm ci again whenever the lock file changed since the last install.
if [[ ! -f "$HERE/node_modules/.package-lock.json" || "$HERE/package-lock.json" -nt "$HERE/node_modules/.package-lock.json" ]]; then
  log "installing @playwright/test (npm ci)"
  (cd "$HERE" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi

cd "$HERE"
AGORA_BIN="$AGORA" exec npx --no-install playwright test "$@"
