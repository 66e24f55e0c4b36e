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
# system ticks over the measured run / requests), and the same for the jokes
# instance, `agora up` (it relays the children's logs) and wrk, who share the cores.
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
# The other processes on the same two cores: the jokes instance behind both proxies, and
# `agora up` itself (it relays every child's log lines, the gateway's access lines among them).
JOKES_PID="$(pgrep -P "$AGORA_PID" -f 'serve jokes' | head -1 || true)"
[[ -n "$JOKES_PID" ]] || die "no jokes process under agora up"
busy_check >/dev/null
printf '%-6s %-8s %9s %9s %9s %9s %9s %9s %9s %9s\n' round proxy "req/s" "user" "sys" "proxy" "jokes" "agora-up" "wrk" "all"
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
    read -r ju1 js1 < <(ticks "$JOKES_PID")
    read -r au1 as1 < <(ticks "$AGORA_PID")
    out="$(mktemp)"
    # wrk's own CPU: bash's `time` of the child, in seconds.
    wrk_cpu="$( { TIMEFORMAT='%U %S'; time wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION"s "$url" >"$out"; } 2>&1 )"
    n="$(awk '/requests in/ { print $1 }' "$out")"
    rm -f "$out"
    read -r u2 s2 < <(ticks "${pids[@]}")
    read -r ju2 js2 < <(ticks "$JOKES_PID")
    read -r au2 as2 < <(ticks "$AGORA_PID")
    read -r wu ws <<<"$wrk_cpu"
    awk -v r="$round" -v p="$proxy" -v n="$n" -v d="$DURATION" -v hz="$HZ" -v u=$((u2 - u1)) -v s=$((s2 - s1)) \
      -v j=$((ju2 - ju1 + js2 - js1)) -v a=$((au2 - au1 + as2 - as1)) -v w="$(awk -v u="$wu" -v s="$ws" 'BEGIN { print u + s }')" \
      'BEGIN { f = 1e6 / hz / n; wf = w * 1e6 / n
               printf "%-6s %-8s %9.0f %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f\n", r, p, n / d, u * f, s * f, (u + s) * f, j * f, a * f, wf, (u + s + j + a) * f + wf }'
  done
done
echo "(CPU microseconds per request: the proxy's user and kernel time and their sum, then the jokes instance, agora up, wrk, and all of them)"
