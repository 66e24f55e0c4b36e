#!/usr/bin/env bash
# Gateway overhead benchmark: wrk against the jokes service directly and
# through the gateway, on one `agora up`, on 127.0.0.1 only.
#
#   bench/gateway.sh
#
# Environment:
#   DURATION=10s     length of each measured wrk run
#   WARMUP=3s        length of the (discarded) warm-up run per target
#   THREADS=2        wrk threads       CONNECTIONS=64   wrk connections
#   ROUNDS=3         nginx and gateway are measured this many times each,
#                    alternating (nginx first in odd rounds, the gateway first
#                    in even ones); medians are reported
#   SKIP_BUILD=1     do not run `cargo build --release -p agora` first
#   AGORA=path       agora binary (default target/release/agora)
#
#   NGINX=0          skip the nginx reference run (default: run it)
#
# Three targets in the same run: the jokes instance directly, nginx as a
# reverse proxy in front of that same instance (upstream keepalive, access log
# on: the reference the gateway must beat), and our gateway. nginx and the
# gateway alternate over ROUNDS rounds, so that a neighbour's burst on a shared
# machine does not land on one of them only. Prints a table of medians, each
# round's gateway/nginx ratio and their median, and the gateway/direct ratio;
# writes bench/results/gateway-<date>.json.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-3s}"
THREADS="${THREADS:-2}"
CONNECTIONS="${CONNECTIONS:-64}"
ROUNDS="${ROUNDS:-3}"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a positive integer" >&2; exit 2; }
AGORA="${AGORA:-$ROOT/target/release/agora}"

# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

# ---------- prerequisites ----------
if [[ -z "${SKIP_BUILD:-}" ]]; then
  log "building: cargo build --release -p agora"
  (cd "$ROOT" && cargo build --release -p agora)
fi
[[ -x "$AGORA" ]] || die "no agora binary at $AGORA"
ensure_wrk
[[ "${NGINX:-1}" != 0 ]] && ensure_nginx

# ---------- start agora ----------
PORT="$(free_port)"
# The rate limiter stays on (its cost is measured), with a limit no load test reaches:
# every wrk connection comes from 127.0.0.1, one anonymous client.
export RATE_LIMIT_ANON_BURST="${RATE_LIMIT_ANON_BURST:-1000000000}" RATE_LIMIT_ANON_PER_SEC="${RATE_LIMIT_ANON_PER_SEC:-1000000000}"
start_agora "$PORT"
GATEWAY="127.0.0.1:$PORT"
DIRECT="$(jokes_instance "$PORT")"
log "gateway $GATEWAY, jokes instance $DIRECT"

DIRECT_URL="http://$DIRECT/joke"
GATEWAY_URL="http://$GATEWAY/joke"
for url in "$DIRECT_URL" "$GATEWAY_URL"; do
  curl -fsS -o /dev/null "$url" || die "GET $url failed"
done

# ---------- nginx, the reference proxy, in front of the same instance ----------
N_RPS=0 N_P50=0 N_P99=0 N_REQS=0 N_NON2XX=0 N_ERRS=0 NGINX_URL=""
if [[ "${NGINX:-1}" != 0 ]]; then
  NGINX_PORT="$(free_port)"
  start_nginx "$NGINX_PORT" "$DIRECT"
  NGINX_URL="http://127.0.0.1:$NGINX_PORT/joke"
  curl -fsS -o /dev/null "$NGINX_URL" || die "GET $NGINX_URL (nginx) failed"
fi

# ---------- measure ----------
# median V...: the middle value (the mean of the two middle ones for an even count).
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }

CPU_BUSY_BEFORE="$(busy_check)"
read -r D_RPS D_P50 D_P99 D_REQS D_NON2XX D_ERRS < <(run_wrk direct "$DIRECT_URL")
declare -a NR_RPS NR_P50 NR_P99 GR_RPS GR_P50 GR_P99 ROUND_RATIOS
N_REQS=0 N_NON2XX=0 N_ERRS=0 G_REQS=0 G_NON2XX=0 G_ERRS=0
measure_nginx() {
  local rps p50 p99 reqs non2xx errs
  read -r rps p50 p99 reqs non2xx errs < <(run_wrk "nginx (round $1)" "$NGINX_URL")
  NR_RPS+=("$rps") NR_P50+=("$p50") NR_P99+=("$p99")
  N_REQS=$((N_REQS + reqs)) N_NON2XX=$((N_NON2XX + non2xx)) N_ERRS=$((N_ERRS + errs))
}
measure_gateway() {
  local rps p50 p99 reqs non2xx errs
  read -r rps p50 p99 reqs non2xx errs < <(run_wrk "gateway (round $1)" "$GATEWAY_URL")
  GR_RPS+=("$rps") GR_P50+=("$p50") GR_P99+=("$p99")
  G_REQS=$((G_REQS + reqs)) G_NON2XX=$((G_NON2XX + non2xx)) G_ERRS=$((G_ERRS + errs))
}
for round in $(seq "$ROUNDS"); do
  if [[ -z "$NGINX_URL" ]]; then
    measure_gateway "$round"
  elif (( round % 2 )); then
    measure_nginx "$round"; measure_gateway "$round"
  else
    measure_gateway "$round"; measure_nginx "$round"
  fi
  if [[ -n "$NGINX_URL" ]]; then
    ROUND_RATIOS+=("$(awk -v g="${GR_RPS[-1]}" -v n="${NR_RPS[-1]}" 'BEGIN { printf "%.3f", (n > 0 ? g / n : 0) }')")
    log "round $round: gateway ${GR_RPS[-1]} req/s, nginx ${NR_RPS[-1]} req/s, ratio ${ROUND_RATIOS[-1]}"
  fi
done
G_RPS="$(median "${GR_RPS[@]}")" G_P50="$(median "${GR_P50[@]}")" G_P99="$(median "${GR_P99[@]}")"
if [[ -n "$NGINX_URL" ]]; then
  N_RPS="$(median "${NR_RPS[@]}")" N_P50="$(median "${NR_P50[@]}")" N_P99="$(median "${NR_P99[@]}")"
fi
[[ -n "$D_RPS" && -n "$G_RPS" ]] || die "could not parse wrk output"
RATIO="$(awk -v g="$G_RPS" -v d="$D_RPS" 'BEGIN { printf "%.3f", (d > 0 ? g / d : 0) }')"
NGINX_RATIO="$( [[ -n "$NGINX_URL" ]] && median "${ROUND_RATIOS[@]}" || echo 0)"

# ---------- report ----------
echo
printf '%-9s %-28s %12s %10s %10s %9s %8s\n' target url "req/s" "p50 ms" "p99 ms" "non-2xx" "sockerr"
printf '%-9s %-28s %12s %10s %10s %9s %8s\n' direct "$DIRECT_URL" "$D_RPS" "$D_P50" "$D_P99" "$D_NON2XX" "$D_ERRS"
[[ -n "$NGINX_URL" ]] && printf '%-9s %-28s %12s %10s %10s %9s %8s\n' nginx "$NGINX_URL" "$N_RPS" "$N_P50" "$N_P99" "$N_NON2XX" "$N_ERRS"
printf '%-9s %-28s %12s %10s %10s %9s %8s\n' gateway "$GATEWAY_URL" "$G_RPS" "$G_P50" "$G_P99" "$G_NON2XX" "$G_ERRS"
echo
echo "nginx and gateway rows: medians of $ROUNDS alternating rounds; direct: one run"
echo "gateway/direct throughput ratio: $RATIO  (wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $(nproc) cores)"
if [[ -n "$NGINX_URL" ]]; then
  echo "gateway/nginx throughput ratio per round: ${ROUND_RATIOS[*]}"
  echo "gateway/nginx throughput ratio:  $NGINX_RATIO  (median of the rounds; same upstream instance)"
fi
ACCESS_LINES=0
if [[ -n "$ACCESS_LOG_FILE" ]]; then
  ACCESS_LINES="$(wc -l <"$ACCESS_LOG_FILE" 2>/dev/null || echo 0)"
  echo "gateway access log: $ACCESS_LINES lines so far in $ACCESS_LOG_FILE (one per request, buffered ≤ 100 ms)"
fi
if (( D_NON2XX + D_ERRS + G_NON2XX + G_ERRS > 0 )); then
  echo "WARNING: some requests failed (non-2xx or socket errors); throughput includes them"
fi

mkdir -p "$HERE/results"
STAMP="$(date -u +%Y-%m-%dT%H%M%SZ)"
RESULT="$HERE/results/gateway-$STAMP.json"
COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
DIRTY="$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo true || echo false)"
CPU="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo unknown)"
python3 - "$RESULT" <<EOF
import json, sys
def run(url, rps, p50, p99, reqs, non2xx, errs):
    return {"url": url, "requests_per_sec": float(rps), "p50_ms": float(p50), "p99_ms": float(p99),
            "requests": int(reqs), "non_2xx": int(non2xx), "socket_errors": int(errs)}
doc = {
    "benchmark": "gateway",
    "date": "$STAMP",
    "commit": "$COMMIT",
    "dirty": $( [[ $DIRTY == true ]] && echo True || echo False ),
    "machine": {"cores": $(nproc), "cpu": "$CPU", "cpu_busy_percent_before": int("$CPU_BUSY_BEFORE")},
    "wrk": {"threads": $THREADS, "connections": $CONNECTIONS, "duration": "$DURATION", "warmup": "$WARMUP"},
    "rounds": $ROUNDS,
    "rounds_gateway_rps": [$(IFS=,; echo "${GR_RPS[*]}")],
    "rounds_nginx_rps": [$(IFS=,; echo "${NR_RPS[*]:-}")],
    "rounds_gateway_over_nginx": [$(IFS=,; echo "${ROUND_RATIOS[*]:-}")],
    "direct": run("$DIRECT_URL", "$D_RPS", "$D_P50", "$D_P99", "$D_REQS", "$D_NON2XX", "$D_ERRS"),
    "gateway": run("$GATEWAY_URL", "$G_RPS", "$G_P50", "$G_P99", "$G_REQS", "$G_NON2XX", "$G_ERRS"),
    "nginx": run("$NGINX_URL", "$N_RPS", "$N_P50", "$N_P99", "$N_REQS", "$N_NON2XX", "$N_ERRS") if "$NGINX_URL" else None,
    "gateway_access_log": {"file": "$ACCESS_LOG_FILE" or None, "lines": int("$ACCESS_LINES")},
    "gateway_over_direct": float("$RATIO"),
    "gateway_over_nginx": float("$NGINX_RATIO") if "$NGINX_URL" else None,
}
with open(sys.argv[1], "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
EOF
echo "results: ${RESULT#"$ROOT"/}"
