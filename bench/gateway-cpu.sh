#!/usr/bin/env bash
# CPU time per proxied request, user and kernel, of the gateway and of nginx
# in front of the same jokes instance: where a throughput difference between
# the two comes from (the proxies share 2 cores with wrk and the jokes
# service, so req/s alone mixes everyone's costs).
#
#   bench/gateway-cpu.sh
#
# Starts one `agora up` and nginx (as bench/gateway.sh does), then for ROUNDS
# rounds loads nginx and the gateway in turn (wrk -t2 -c64, WARMUP then
# DURATION seconds) and prints, per round and proxy, req/s and the CPU time
# per request the proxy's processes used (from /proc/<pid>/stat: user and
# system ticks over the measured run / requests).
#
# Environment: AGORA=path (default target/release/agora), SKIP_BUILD=1,
# ROUNDS=3, DURATION=8 and WARMUP=2 (seconds), THREADS=2, CONNECTIONS=64.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
AGORA="${AGORA:-$ROOT/target/release/agora}"
ROUNDS="${ROUNDS:-3}" DURATION="${DURATION:-8}" WARMUP="${WARMUP:-2}"
THREADS="${THREADS:-2}" CONNECTIONS="${CONNECTIONS:-64}"
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

if [[ -z "${SKIP_BUILD:-}" ]]; then
  (cd "$ROOT" && cargo build --release -p agora)
fi
ensure_wrk
ensure_nginx

PORT="$(free_port)"
export RATE_LIMIT_ANON_BURST=1000000000 RATE_LIMIT_ANON_PER_SEC=1000000000
start_agora "$PORT"
GATEWAY_PID="$(pgrep -P "$AGORA_PID" -f 'serve gateway' | head -1 || true)"
[[ -n "$GATEWAY_PID" ]] || die "no gateway process under agora up"
DIRECT="$(jokes_instance "$PORT")"
NGINX_PORT="$(free_port)"
start_nginx "$NGINX_PORT" "$DIRECT"
curl -fsS -o /dev/null "http://127.0.0.1:$PORT/joke" || die "GET /joke through the gateway failed"

# ticks PID...: "user system" clock ticks summed over the processes.
ticks() {
  local pid u=0 s=0 a b
  for pid in "$@"; do
    read -r a b < <(awk '{ print $14, $15 }' "/proc/$pid/stat")
    u=$((u + a)) s=$((s + b))
  done
  echo "$u $s"
}
HZ="$(getconf CLK_TCK)"
busy_check >/dev/null
printf '%-6s %-8s %10s %14s %14s %14s\n' round proxy "req/s" "user us/req" "sys us/req" "total us/req"
for round in $(seq "$ROUNDS"); do
  for proxy in nginx gateway; do
    if [[ $proxy == nginx ]]; then
      url="http://127.0.0.1:$NGINX_PORT/joke"
      mapfile -t pids < <(pgrep -f 'nginx: worker process')
    else
      url="http://127.0.0.1:$PORT/joke"
      pids=("$GATEWAY_PID")
    fi
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP"s "$url" >/dev/null
    read -r u1 s1 < <(ticks "${pids[@]}")
    n="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION"s "$url" | awk '/requests in/ { print $1 }')"
    read -r u2 s2 < <(ticks "${pids[@]}")
    awk -v r="$round" -v p="$proxy" -v n="$n" -v d="$DURATION" -v hz="$HZ" -v u=$((u2 - u1)) -v s=$((s2 - s1)) \
      'BEGIN { f = 1e6 / hz / n; printf "%-6s %-8s %10.0f %14.1f %14.1f %14.1f\n", r, p, n / d, u * f, s * f, (u + s) * f }'
  done
done
