#!/usr/bin/env bash
# A large download streamed through the gateway: 1 GiB from an origin that generates the body
# as it sends it (bench/stream-origin.py, nothing on disk), fetched with curl (to /dev/null)
# directly, through nginx (lib.sh's reference configuration, no temporary files) and through the gateway, on
# 127.0.0.1. nginx and the gateway alternate over ROUNDS rounds; the gateway's RSS is sampled
# every 50 ms during its downloads.
#
#   bench/stream-1gib.sh
#   ROUNDS=5 SKIP_BUILD=1 bench/stream-1gib.sh
#
# Environment: SIZE (bytes, default 1073741824), ROUNDS (3), SKIP_BUILD=1, GATEWAY_BIN (default
# target/release/examples/gateway).
# Prints MB/s per target, the gateway/nginx ratio per round and its median, and the gateway's
# RSS before and at its peak; writes bench/results/stream-1gib-<date>.json.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
SIZE="${SIZE:-1073741824}"
ROUNDS="${ROUNDS:-3}"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a positive integer" >&2; exit 2; }

# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
# shellcheck source=bench/stream-lib.sh
source "$HERE/stream-lib.sh"

build_gateway
ensure_nginx

start_streams
NGINX_PORT="$(free_port)"
# Buffered in memory only: a body larger than nginx's buffers is passed on as it comes, as the
# gateway's is, instead of being spooled to a temporary file.
start_nginx "$NGINX_PORT" "$ORIGIN" "proxy_max_temp_file_size 0;"

# download URL: "bytes_per_second bytes" as curl saw them.
download() {
  curl -fsS -o /dev/null -w '%{speed_download} %{size_download}\n' "$1"
}

# peak_rss PID OUT: samples PID's RSS every 50 ms into OUT (the highest so far) until killed.
peak_rss() {
  local pid="$1" out="$2" peak=0 now
  while now="$(rss_kib "$pid" 2>/dev/null)"; do
    (( now > peak )) && { peak=$now; echo "$peak" >"$out"; }
    sleep 0.05
  done
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
mbps() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }

PATH_Q="/joke/bytes?size=$SIZE"
CPU_BUSY_BEFORE="$(busy_check)"
read -r D_SPEED D_SIZE < <(download "http://$ORIGIN$PATH_Q")
log "direct: $(mbps "$D_SPEED") MB/s"
RSS_BEFORE="$(rss_kib "$GATEWAY_PID")"
declare -a G_SPEEDS N_SPEEDS RATIOS PEAKS
PEAK_FILE="$(mktemp)"
measure_gateway() {
  echo "$(rss_kib "$GATEWAY_PID")" >"$PEAK_FILE"
  peak_rss "$GATEWAY_PID" "$PEAK_FILE" &
  local sampler=$! speed size
  read -r speed size < <(download "http://$GATEWAY$PATH_Q")
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  [[ "$size" == "$SIZE" ]] || die "the gateway passed $size bytes of $SIZE"
  G_SPEEDS+=("$speed") PEAKS+=("$(cat "$PEAK_FILE")")
  log "gateway (round $1): $(mbps "$speed") MB/s, RSS peak ${PEAKS[-1]} KiB"
}
measure_nginx() {
  local speed size
  read -r speed size < <(download "http://127.0.0.1:$NGINX_PORT$PATH_Q")
  [[ "$size" == "$SIZE" ]] || die "nginx passed $size bytes of $SIZE"
  N_SPEEDS+=("$speed")
  log "nginx (round $1): $(mbps "$speed") MB/s"
}
for round in $(seq "$ROUNDS"); do
  if (( round % 2 )); then measure_nginx "$round"; measure_gateway "$round"; else measure_gateway "$round"; measure_nginx "$round"; fi
  RATIOS+=("$(awk -v g="${G_SPEEDS[-1]}" -v n="${N_SPEEDS[-1]}" 'BEGIN { printf "%.3f", (n > 0 ? g / n : 0) }')")
done
rm -f "$PEAK_FILE"
RSS_AFTER="$(rss_kib "$GATEWAY_PID")"
G_SPEED="$(median "${G_SPEEDS[@]}")" N_SPEED="$(median "${N_SPEEDS[@]}")" RATIO="$(median "${RATIOS[@]}")"
PEAK="$(printf '%s\n' "${PEAKS[@]}" | sort -g | tail -1)"
GROWTH_MB="$(awk -v p="$PEAK" -v b="$RSS_BEFORE" 'BEGIN { printf "%.1f", (p - b) / 1024 }')"

echo
printf '%-8s %10s\n' target "MB/s"
printf '%-8s %10s\n' direct "$(mbps "$D_SPEED")" nginx "$(mbps "$N_SPEED")" gateway "$(mbps "$G_SPEED")"
echo
echo "$SIZE bytes per download; nginx and gateway: medians of $ROUNDS alternating rounds"
echo "gateway/nginx per round: ${RATIOS[*]}"
echo "gateway/nginx: $RATIO (median)"
echo "gateway RSS: ${RSS_BEFORE} KiB before, ${PEAK} KiB at its peak during a download (+${GROWTH_MB} MB), ${RSS_AFTER} KiB after"

mkdir -p "$HERE/results"
STAMP="$(date -u +%Y-%m-%dT%H%M%SZ)"
RESULT="$HERE/results/stream-1gib-$STAMP.json"
COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
python3 - "$RESULT" <<EOF
import json, sys
doc = {
    "benchmark": "stream-1gib", "date": "$STAMP", "commit": "$COMMIT",
    "machine": {"cores": $(nproc), "cpu_busy_percent_before": int("$CPU_BUSY_BEFORE")},
    "bytes": $SIZE, "rounds": $ROUNDS,
    "direct_bytes_per_sec": float("$D_SPEED"),
    "rounds_gateway_bytes_per_sec": [$(IFS=,; echo "${G_SPEEDS[*]}")],
    "rounds_nginx_bytes_per_sec": [$(IFS=,; echo "${N_SPEEDS[*]}")],
    "rounds_gateway_over_nginx": [$(IFS=,; echo "${RATIOS[*]}")],
    "gateway_over_nginx": float("$RATIO"),
    "gateway_rss_kib": {"before": $RSS_BEFORE, "peak": $PEAK, "after": $RSS_AFTER},
    "gateway_rss_growth_mb": float("$GROWTH_MB"),
}
with open(sys.argv[1], "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
EOF
echo "results: ${RESULT#"$ROOT"/}"
