#!/usr/bin/env bash
# Event bus benchmark (issue 18): kit::events on the embedded backend and on RabbitMQ,
# a bare lapin client and Python pika against the same RabbitMQ, in one run, with the
# same fixed settings: 1 KiB payloads, one publisher waiting for each acknowledgement
# (commit or publisher confirm), a quorum queue, prefetch 100, manual acks, a no-op
# handler. Phases: publish a backlog of EVENTS, drain it, then LIVE events one by one
# for the publish -> handler latency.
#
#   bench/events.sh
#
# Environment: EVENTS=100000 LIVE=2000 AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f
#   MODES="kit-embedded kit-amqp lapin pika"  SKIP_BUILD=1 (do not build the example)
#
# Prints a table; writes bench/results/events-<date>.json.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
EVENTS="${EVENTS:-100000}" LIVE="${LIVE:-2000}"
AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
MODES="${MODES:-kit-embedded kit-amqp lapin pika}"
BENCH="$ROOT/target/release/examples/events_bench"
VENV="$ROOT/target/bench-venv"

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ -z "${SKIP_BUILD:-}" ]]; then
  log "building: cargo build --release -p kit --features events --example events_bench"
  (cd "$ROOT" && cargo build --release -p kit --features events --example events_bench)
fi
[[ -x "$BENCH" ]] || die "no benchmark binary at $BENCH"
if [[ " $MODES " == *" pika "* ]]; then
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
  "$VENV/bin/python" -c 'import pika' 2>/dev/null || "$VENV/bin/pip" install --quiet 'pika>=1.3,<2'
fi
(exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null || die "RabbitMQ is not reachable on 127.0.0.1:5672"

RESULTS=()
for mode in $MODES; do
  log "$mode: $EVENTS events backlog, $LIVE live"
  case "$mode" in
    kit-embedded) line="$("$BENCH" kit-embedded --events "$EVENTS" --live "$LIVE")" ;;
    kit-amqp|lapin) line="$("$BENCH" "$mode" --url "$AMQP_URL" --events "$EVENTS" --live "$LIVE")" ;;
    pika) line="$("$VENV/bin/python" "$HERE/events_pika.py" "$AMQP_URL" "$EVENTS" "$LIVE")" ;;
    *) die "unknown mode $mode" ;;
  esac
  log "$line"
  RESULTS+=("$line")
done

mkdir -p "$HERE/results"
out="$HERE/results/events-$(date -u +%Y-%m-%dT%H%M%SZ).json"
printf '%s\n' "${RESULTS[@]}" | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
json.dump({"settings": {"payload_bytes": 1024, "prefetch": 100, "queue": "quorum"}, "runs": rows}, open(sys.argv[1], "w"), indent=2)
by = {r["mode"]: r for r in rows}
print("| mode | published/s | consumed/s | p50 ms | p99 ms |")
print("| --- | ---: | ---: | ---: | ---: |")
for r in rows:
    print("| %s | %.0f | %.0f | %.2f | %.2f |" % (r["mode"], r["publish_per_s"], r["consume_per_s"], r["latency_p50_ms"], r["latency_p99_ms"]))
if "kit-amqp" in by and "lapin" in by:
    k, l = by["kit-amqp"], by["lapin"]
    print("kit-amqp / lapin: publish %.2f, consume %.2f" % (k["publish_per_s"] / l["publish_per_s"], k["consume_per_s"] / l["consume_per_s"]))
if "kit-amqp" in by and "pika" in by:
    k, p = by["kit-amqp"], by["pika"]
    print("kit-amqp / pika: publish %.2f, consume %.2f" % (k["publish_per_s"] / p["publish_per_s"], k["consume_per_s"] / p["consume_per_s"]))
' "$out"
log "results: $out"
