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
#   SKIP_BUILD=1     do not run `cargo build --release -p agora` first
#   AGORA=path       agora binary (default target/release/agora)
#
# Prints a table and the gateway/direct ratio; writes
# bench/results/gateway-<date>.json.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-3s}"
THREADS="${THREADS:-2}"
CONNECTIONS="${CONNECTIONS:-64}"
AGORA="${AGORA:-$ROOT/target/release/agora}"
READY_TIMEOUT=60

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

# ---------- prerequisites ----------
if [[ -z "${SKIP_BUILD:-}" ]]; then
  log "building: cargo build --release -p agora"
  (cd "$ROOT" && cargo build --release -p agora)
fi
[[ -x "$AGORA" ]] || die "no agora binary at $AGORA"
if ! command -v wrk >/dev/null; then
  log "installing wrk (apt)"
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y wrk
fi
command -v curl >/dev/null || die "curl is required"
command -v python3 >/dev/null || die "python3 is required"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# ---------- start agora ----------
PORT="$(free_port)"
DATA_DIR="$(mktemp -d -t agora-bench-data.XXXXXX)"
AGORA_LOG="$(mktemp -t agora-bench-log.XXXXXX)"
AGORA_PID=""

stop_agora() {
  [[ -n "$AGORA_PID" ]] || return 0
  local rc=0 children
  children="$(pgrep -P "$AGORA_PID" 2>/dev/null | tr '\n' ' ' || true)"
  if kill -0 "$AGORA_PID" 2>/dev/null; then
    kill -TERM "$AGORA_PID" 2>/dev/null || true
    for _ in $(seq 300); do kill -0 "$AGORA_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$AGORA_PID" 2>/dev/null; then
      log "agora did not stop within 30 s of SIGTERM; killing it"
      kill -KILL "$AGORA_PID" 2>/dev/null || true
      rc=1
    fi
  fi
  wait "$AGORA_PID" 2>/dev/null || { log "agora exited with status $?"; rc=1; }
  AGORA_PID=""
  sleep 0.5
  local pid
  for pid in $children; do
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q ' serve'; then
      log "orphan left behind: $(ps -o pid=,args= -p "$pid" || true)"
      kill -KILL "$pid" 2>/dev/null || true
      rc=1
    fi
  done
  (( rc == 0 )) && log "agora stopped cleanly"
  return $rc
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  stop_agora || { (( rc == 0 )) && rc=1; }
  if (( rc != 0 )); then
    log "last 40 lines of the agora log ($AGORA_LOG, kept):"
    tail -n 40 "$AGORA_LOG" >&2
  else
    rm -f "$AGORA_LOG"
  fi
  rm -rf "$DATA_DIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "starting agora up on 127.0.0.1:$PORT (log: $AGORA_LOG)"
# The rate limiter stays on (its cost is measured), with a limit no load test reaches:
# every wrk connection comes from 127.0.0.1, one anonymous client.
RATE_LIMIT_ANON_BURST="${RATE_LIMIT_ANON_BURST:-1000000000}" RATE_LIMIT_ANON_PER_SEC="${RATE_LIMIT_ANON_PER_SEC:-1000000000}" \
  "$AGORA" up --port "$PORT" --data-dir "$DATA_DIR" >"$AGORA_LOG" 2>&1 &
AGORA_PID=$!
deadline=$((SECONDS + READY_TIMEOUT))
until grep -q "Agora is up: http://127.0.0.1:$PORT" "$AGORA_LOG" 2>/dev/null; do
  kill -0 "$AGORA_PID" 2>/dev/null || die "agora exited before it was up"
  (( SECONDS < deadline )) || die "agora was not up within ${READY_TIMEOUT}s"
  sleep 0.2
done

GATEWAY="127.0.0.1:$PORT"
# The first healthy jokes instance, as host:port.
DIRECT=""
until [[ -n "$DIRECT" ]]; do
  DIRECT="$(curl -fsS "http://$GATEWAY/api/status" | python3 -c '
import json, sys
for s in json.load(sys.stdin).get("services", []):
    if s.get("name") == "jokes":
        for i in s.get("instances", []):
            if i.get("healthy"):
                print(i["address"]); sys.exit(0)
' || true)"
  [[ -n "$DIRECT" ]] && break
  (( SECONDS < deadline )) || die "no healthy jokes instance in /api/status"
  sleep 0.5
done
[[ "$DIRECT" =~ ^127\.0\.0\.1:[0-9]+$ ]] || die "jokes instance address $DIRECT is not on 127.0.0.1; refusing to benchmark it"
log "gateway $GATEWAY, jokes instance $DIRECT"

DIRECT_URL="http://$DIRECT/joke"
GATEWAY_URL="http://$GATEWAY/joke"
for url in "$DIRECT_URL" "$GATEWAY_URL"; do
  curl -fsS -o /dev/null "$url" || die "GET $url failed"
done

# ---------- measure ----------
# wrk, agora and its children share this machine: anything else busy skews the numbers.
# Percentage of CPU busy over one second (from /proc/stat).
cpu_busy() {
  local a b
  a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
  awk -v u=$((b[1]+b[2]+b[3]+b[6]+b[7] - a[1]-a[2]-a[3]-a[6]-a[7])) \
      -v t=$((b[1]+b[2]+b[3]+b[4]+b[5]+b[6]+b[7] - a[1]-a[2]-a[3]-a[4]-a[5]-a[6]-a[7])) \
      'BEGIN { printf "%.0f", (t > 0 ? 100 * u / t : 0) }'
}
busy_check() {
  local busy others
  busy="$(cpu_busy)"
  others="$(pgrep -x rustc 2>/dev/null | wc -l)"
  if (( others > 0 || busy > 15 )); then
    log "WARNING: machine busy before the runs (CPU ${busy}% busy, $others rustc processes): numbers will be low"
  fi
  echo "$busy"
}
CPU_BUSY_BEFORE="$(busy_check)"
# Parses wrk --latency output into "rps p50_ms p99_ms requests non2xx socket_errors".
parse_wrk() {
  awk '
    function ms(v) {
      if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 }
      if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 }
      if (v ~ /m$/)  { sub(/m$/, "", v);  return v * 60000 }
      if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1000 }
      return v + 0
    }
    /^Requests\/sec:/          { rps = $2 }
    $1 == "50%"                { p50 = ms($2) }
    $1 == "99%"                { p99 = ms($2) }
    / requests in /            { reqs = $1 }
    /Non-2xx or 3xx responses/ { non2xx = $NF }
    /Socket errors:/ {
      gsub(/,/, "")
      errs = $4 + $6 + $8 + $10
    }
    END { printf "%s %.3f %.3f %d %d %d\n", rps, p50, p99, reqs, non2xx, errs }
  '
}

run_wrk() { # name url
  local name="$1" url="$2" out
  log "warm-up $name ($WARMUP): $url"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "$url" >/dev/null
  log "measuring $name: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency $url"
  out="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$url")"
  printf '%s\n' "--- wrk: $name ($url) ---" "$out" >&2
  printf '%s\n' "$out" | parse_wrk
}

read -r D_RPS D_P50 D_P99 D_REQS D_NON2XX D_ERRS < <(run_wrk direct "$DIRECT_URL")
read -r G_RPS G_P50 G_P99 G_REQS G_NON2XX G_ERRS < <(run_wrk gateway "$GATEWAY_URL")
[[ -n "$D_RPS" && -n "$G_RPS" ]] || die "could not parse wrk output"
RATIO="$(awk -v g="$G_RPS" -v d="$D_RPS" 'BEGIN { printf "%.3f", (d > 0 ? g / d : 0) }')"

# ---------- report ----------
echo
printf '%-9s %-28s %12s %10s %10s %9s %8s\n' target url "req/s" "p50 ms" "p99 ms" "non-2xx" "sockerr"
printf '%-9s %-28s %12s %10s %10s %9s %8s\n' direct "$DIRECT_URL" "$D_RPS" "$D_P50" "$D_P99" "$D_NON2XX" "$D_ERRS"
printf '%-9s %-28s %12s %10s %10s %9s %8s\n' gateway "$GATEWAY_URL" "$G_RPS" "$G_P50" "$G_P99" "$G_NON2XX" "$G_ERRS"
echo
echo "gateway/direct throughput ratio: $RATIO  (wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $(nproc) cores)"
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
    "direct": run("$DIRECT_URL", "$D_RPS", "$D_P50", "$D_P99", "$D_REQS", "$D_NON2XX", "$D_ERRS"),
    "gateway": run("$GATEWAY_URL", "$G_RPS", "$G_P50", "$G_P99", "$G_REQS", "$G_NON2XX", "$G_ERRS"),
    "gateway_over_direct": float("$RATIO"),
}
with open(sys.argv[1], "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
EOF
echo "results: ${RESULT#"$ROOT"/}"
