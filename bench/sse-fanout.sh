#!/usr/bin/env bash
# Server-Sent Events fan-out through the gateway: CLIENTS clients (bench/sse-clients.py), each
# with an event stream of its own from the origin (bench/stream-origin.py), one event every
# EVERY seconds each, held for SECONDS seconds, on 127.0.0.1. Measures the gateway's CPU (user
# and system, from /proc) while the streams flow, and its RSS before the clients connect and
# while they are all held: the memory per held stream.
#
#   bench/sse-fanout.sh
#   CLIENTS=1000 SECONDS_HELD=20 SKIP_BUILD=1 bench/sse-fanout.sh
#
# Environment: CLIENTS (1000), EVERY (1.0 s), SECONDS_HELD (20), SKIP_BUILD=1, GATEWAY_BIN (default
# target/release/examples/gateway).
# Writes bench/results/sse-fanout-<date>.json.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
CLIENTS="${CLIENTS:-1000}"
EVERY="${EVERY:-1.0}"
SECONDS_HELD="${SECONDS_HELD:-20}"

# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
# shellcheck source=bench/stream-lib.sh
source "$HERE/stream-lib.sh"

build_gateway
(( $(ulimit -n) > CLIENTS * 2 + 100 )) || ulimit -n $((CLIENTS * 2 + 1000)) \
  || die "ulimit -n is $(ulimit -n): too low for $CLIENTS clients"

start_streams
CPU_BUSY_BEFORE="$(busy_check)"
RSS_IDLE="$(rss_kib "$GATEWAY_PID")"
CLIENTS_OUT="$(mktemp)"
log "opening $CLIENTS event streams through the gateway"
timeout $((SECONDS_HELD + 120)) python3 "$HERE/sse-clients.py" \
  "http://$GATEWAY/joke/events?every=$EVERY" "$CLIENTS" "$SECONDS_HELD" >"$CLIENTS_OUT" &
CLIENTS_PID=$!
deadline=$((SECONDS + 90))
until grep -q '^connected' "$CLIENTS_OUT"; do
  kill -0 "$CLIENTS_PID" 2>/dev/null || die "the clients failed: $(cat "$CLIENTS_OUT")"
  (( SECONDS < deadline )) || die "$CLIENTS streams were not all open within 90 s"
  sleep 0.2
done
# The clients measure from the moment they print "connected"; so does this.
TICKS_BEFORE="$(cpu_ticks "$GATEWAY_PID")" STARTED="$(date +%s.%N)"
RSS_HELD="$(rss_kib "$GATEWAY_PID")"
wait "$CLIENTS_PID" || die "the clients failed: $(cat "$CLIENTS_OUT")"
TICKS_AFTER="$(cpu_ticks "$GATEWAY_PID")" ENDED="$(date +%s.%N)"
RSS_END="$(rss_kib "$GATEWAY_PID")"
read -r _ EVENTS _ EVENTS_PER_SEC _ BROKEN < <(grep '^events' "$CLIENTS_OUT")
rm -f "$CLIENTS_OUT"

HZ="$(getconf CLK_TCK)"
CPU_PERCENT="$(awk -v t=$((TICKS_AFTER - TICKS_BEFORE)) -v hz="$HZ" -v s="$STARTED" -v e="$ENDED" \
  'BEGIN { printf "%.1f", 100 * t / hz / (e - s) }')"
PER_STREAM_KIB="$(awk -v h="$RSS_HELD" -v i="$RSS_IDLE" -v n="$CLIENTS" 'BEGIN { printf "%.1f", (h - i) / n }')"

echo
echo "$CLIENTS streams through the gateway, one event every $EVERY s each, held $SECONDS_HELD s"
echo "events received: $EVENTS ($EVENTS_PER_SEC/s; expected $(awk -v c="$CLIENTS" -v e="$EVERY" 'BEGIN { print c / e }')/s), broken streams: $BROKEN"
echo "gateway CPU: $CPU_PERCENT % of one core while the streams flowed"
echo "gateway RSS: $RSS_IDLE KiB idle, $RSS_HELD KiB with every stream held, $RSS_END KiB at the end"
echo "memory per held stream: $PER_STREAM_KIB KiB"

mkdir -p "$HERE/results"
STAMP="$(date -u +%Y-%m-%dT%H%M%SZ)"
RESULT="$HERE/results/sse-fanout-$STAMP.json"
COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
python3 - "$RESULT" <<EOF
import json, sys
doc = {
    "benchmark": "sse-fanout", "date": "$STAMP", "commit": "$COMMIT",
    "machine": {"cores": $(nproc), "cpu_busy_percent_before": int("$CPU_BUSY_BEFORE")},
    "clients": $CLIENTS, "every_secs": $EVERY, "held_secs": $SECONDS_HELD,
    "events": int("$EVENTS"), "events_per_sec": float("$EVENTS_PER_SEC"), "broken_streams": int("$BROKEN"),
    "gateway_cpu_percent_of_one_core": float("$CPU_PERCENT"),
    "gateway_rss_kib": {"idle": $RSS_IDLE, "held": $RSS_HELD, "end": $RSS_END},
    "gateway_kib_per_held_stream": float("$PER_STREAM_KIB"),
}
with open(sys.argv[1], "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
EOF
echo "results: ${RESULT#"$ROOT"/}"
