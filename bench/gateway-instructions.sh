#!/usr/bin/env bash
# Instructions per proxied request through the gateway, counted by callgrind:
# independent of what else the machine is doing, so it compares two builds
# even on a noisy 2-core VM where req/s swings between runs.
#
#   bench/gateway-instructions.sh
#
# Starts one `agora up` (the registry and the jokes service), then a second
# gateway under `valgrind --tool=callgrind` against the same registry, loads
# it with wrk for SHORT and for LONG seconds in two runs, and prints
# (instructions of the long run - of the short run) / (requests of the long
# run - of the short run): start-up costs cancel out. Every answer must be 200.
#
# Environment: AGORA=path (default target/release/agora), SKIP_BUILD=1,
# SHORT=3 LONG=13 (seconds of load), CONNECTIONS=8, KEEP=dir (keep both
# callgrind outputs there, for callgrind_annotate).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
AGORA="${AGORA:-$ROOT/target/release/agora}"
SHORT="${SHORT:-3}" LONG="${LONG:-13}" CONNECTIONS="${CONNECTIONS:-8}"
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

if [[ -z "${SKIP_BUILD:-}" ]]; then
  (cd "$ROOT" && cargo build --release -p agora)
fi
ensure_wrk
command -v valgrind >/dev/null || { as_root apt-get update; as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y valgrind; }

PORT="$(free_port)"
export RATE_LIMIT_ANON_BURST=1000000000 RATE_LIMIT_ANON_PER_SEC=1000000000
start_agora "$PORT"
REGISTRY_URL="$(grep -o 'REGISTRY_URL=[^ ]*' "$AGORA_LOG" | head -1 | cut -d= -f2 || true)"
if [[ -z "$REGISTRY_URL" ]]; then
  gw_pid="$(pgrep -P "$AGORA_PID" -f 'serve gateway' | head -1 || true)"
  REGISTRY_URL="$(tr '\0' '\n' <"/proc/$gw_pid/environ" | sed -n 's/^REGISTRY_URL=//p')"
fi
[[ -n "$REGISTRY_URL" ]] || die "could not find the registry's URL"
GW_PORT="$(free_port)"
OUT_DIR="$(mktemp -d -t agora-callgrind.XXXXXX)"

# one SECONDS -> prints "instructions requests non200"
one() {
  local out="$OUT_DIR/cg.$1" log="$OUT_DIR/access.$1"
  # Its access log in a file of its own (as the other benches have it), read below for the statuses.
  ACCESS_LOG_FILE="$log" AGORA_SERVICE=gateway HOST=127.0.0.1 PORT="$GW_PORT" INSTANCE_ID="gateway-callgrind" LOG_FORMAT=json \
    REGISTRY_URL="$REGISTRY_URL" valgrind --tool=callgrind --vgdb=no --callgrind-out-file="$out" \
    "$AGORA" serve gateway >"$OUT_DIR/log.$1" 2>&1 &
  local pid=$! deadline=$((SECONDS + 120))
  until curl -fs -o /dev/null "http://127.0.0.1:$GW_PORT/joke" 2>/dev/null; do
    (( SECONDS < deadline )) || die "the gateway under callgrind did not answer within 120 s"
    sleep 1
  done
  # Answers before this one (the instance list still loading: 503) are not the load's.
  sleep 0.5
  local skip n
  skip="$(grep -c '"status":' "$log" || true)"
  n="$(wrk -t1 -c"$CONNECTIONS" -d"$1"s "http://127.0.0.1:$GW_PORT/joke" | awk '/requests in/ {print $1}')"
  kill -INT "$pid"; wait "$pid" || true
  local total non200
  total="$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')"
  non200="$(grep '"status":' "$log" | tail -n +"$((skip + 1))" | grep -vc '"status":200' || true)"
  if (( non200 > 0 )); then
    log "answers other than 200 in the ${1} s run:"
    grep '"status":' "$log" | tail -n +"$((skip + 1))" | grep -v '"status":200' | head -5 >&2
  fi
  echo "$total $n $non200"
}
read -r T1 N1 E1 < <(one "$SHORT")
read -r T2 N2 E2 < <(one "$LONG")
if [[ -n "${KEEP:-}" ]]; then
  mkdir -p "$KEEP" && cp "$OUT_DIR"/cg.* "$KEEP"/ && log "callgrind outputs kept in $KEEP"
fi
rm -rf "$OUT_DIR"
(( E1 + E2 == 0 )) || die "$((E1 + E2)) answers were not 200: the count would measure an error path"
(( N2 > N1 )) || die "the long run served no more requests than the short one"
echo "gateway: $(( (T2 - T1) / (N2 - N1) )) instructions per proxied GET /joke ($N1 and $N2 requests; $(git -C "$ROOT" rev-parse --short HEAD))"
