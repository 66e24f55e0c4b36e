#!/usr/bin/env bash
# Browser test of the Agora web UI against a real `agora up`.
#
#   tests/browser/run.sh [path/to/agora]      (default: target/release/agora)
#
# Installs Debian's chromium (apt) and playwright-core (npm ci) when missing,
# starts `agora up` on a free port with a throw-away data directory, runs
# home.test.mjs against it, and always stops agora again, failing if any of
# its `agora serve` children outlives it. Screenshots: tests/browser/screenshots/.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
AGORA="${1:-$ROOT/target/release/agora}"
READY_TIMEOUT=60   # seconds to wait for "Agora is up"
STOP_TIMEOUT=30    # seconds agora gets to stop after SIGTERM (its default grace is 10 s)

log() { printf '[run.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ ! -x "$AGORA" ]]; then
  die "no agora binary at $AGORA (build it: cargo build --release -p agora)"
fi
AGORA="$(cd "$(dirname "$AGORA")" && pwd)/$(basename "$AGORA")"

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

if [[ ! -x /usr/bin/chromium ]]; then
  log "installing chromium (apt)"
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi
command -v node >/dev/null || die "node is not installed (need Node.js >= 20)"
if [[ ! -d "$HERE/node_modules/playwright-core" ]]; then
  log "installing playwright-core (npm ci)"
  (cd "$HERE" && npm ci --no-audit --no-fund)
fi

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()' 2>/dev/null && return
  local p
  for p in $(shuf -i 20000-60000 -n 50); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  return 1
}

PORT="$(free_port)" || die "no free port found"
DATA_DIR="$(mktemp -d -t agora-browser-data.XXXXXX)"
AGORA_LOG="$(mktemp -t agora-browser-log.XXXXXX)"
AGORA_PID=""
CHILDREN=""

show_log() {
  log "last 60 lines of the agora log ($AGORA_LOG):"
  tail -n 60 "$AGORA_LOG" >&2 || true
}

# Direct children of agora (its `agora serve <name>` processes).
children_of() { pgrep -P "$1" 2>/dev/null | tr '\n' ' ' || true; }

# Stops agora (SIGTERM, then waits); returns non-zero if it would not stop or
# left an `agora serve` child behind.
stop_agora() {
  local rc=0
  [[ -n "$AGORA_PID" ]] || return 0
  if kill -0 "$AGORA_PID" 2>/dev/null; then
    CHILDREN="$(printf '%s\n' $CHILDREN $(children_of "$AGORA_PID") | sort -un | tr '\n' ' ')"
    log "stopping agora (pid $AGORA_PID, children: ${CHILDREN:-none})"
    kill -TERM "$AGORA_PID" 2>/dev/null || true
    local waited=0
    while kill -0 "$AGORA_PID" 2>/dev/null && (( waited < STOP_TIMEOUT * 10 )); do
      sleep 0.1; waited=$((waited + 1))
    done
    if kill -0 "$AGORA_PID" 2>/dev/null; then
      log "agora did not stop within ${STOP_TIMEOUT}s of SIGTERM; killing it"
      kill -KILL "$AGORA_PID" 2>/dev/null || true
      rc=1
    fi
  fi
  local status=0
  wait "$AGORA_PID" 2>/dev/null || status=$?
  AGORA_PID=""
  if (( status != 0 )); then
    log "agora exited with status $status after SIGTERM"
    rc=1
  fi
  # Give a child that was itself exiting a moment, then look for orphans.
  local orphans="" pid
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    orphans=""
    for pid in $CHILDREN; do
      if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q ' serve'; then
        orphans="$orphans $pid"
      fi
    done
    [[ -z "$orphans" ]] && break
    sleep 0.5
  done
  if [[ -n "$orphans" ]]; then
    log "ORPHANS: these agora serve processes outlived agora:"
    for pid in $orphans; do ps -o pid=,ppid=,args= -p "$pid" >&2 || true; done
    kill -KILL $orphans 2>/dev/null || true
    rc=1
  else
    log "agora stopped; no agora serve process left behind"
  fi
  return $rc
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  if ! stop_agora; then
    (( rc == 0 )) && rc=1
  fi
  if (( rc != 0 )); then
    show_log
    log "FAILED (exit $rc)"
  else
    log "PASSED"
  fi
  rm -rf "$DATA_DIR"
  if (( rc == 0 )); then rm -f "$AGORA_LOG"; else log "full agora log kept at $AGORA_LOG"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "starting $AGORA up --port $PORT --data-dir $DATA_DIR (log: $AGORA_LOG)"
"$AGORA" up --port "$PORT" --data-dir "$DATA_DIR" >"$AGORA_LOG" 2>&1 &
AGORA_PID=$!

deadline=$((SECONDS + READY_TIMEOUT))
until grep -q "Agora is up: http://127.0.0.1:$PORT" "$AGORA_LOG" 2>/dev/null; do
  kill -0 "$AGORA_PID" 2>/dev/null || die "agora exited before it was up"
  (( SECONDS < deadline )) || die "agora was not up within ${READY_TIMEOUT}s"
  sleep 0.2
done
CHILDREN="$(children_of "$AGORA_PID")"
log "agora is up on port $PORT (children: $CHILDREN)"

BASE_URL="http://127.0.0.1:$PORT" node "$HERE/home.test.mjs"
