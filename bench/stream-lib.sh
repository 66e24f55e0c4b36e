# Shared by the stream benchmarks (sse-fanout.sh, stream-1gib.sh): a registry and a gateway, each
# `agora serve`, and bench/stream-origin.py registered with the registry as an instance of
# `jokes` (so the standard route /joke leads to it). Source it after lib.sh; it expects ROOT,
# HERE and AGORA.

REGISTRY_PID="" GATEWAY_PID="" ORIGIN_PID=""
STREAM_LOG="$(mktemp -t agora-bench-stream.XXXXXX)"

# start_streams: starts the three; sets GATEWAY (host:port), ORIGIN (host:port), GATEWAY_PID.
start_streams() {
  local registry_port gateway_port origin_out deadline
  registry_port="$(free_port)"
  log "starting a registry on :$registry_port (log: $STREAM_LOG)"
  PORT="$registry_port" RUST_LOG=warn "$AGORA" serve registry >>"$STREAM_LOG" 2>&1 &
  REGISTRY_PID=$!
  deadline=$((SECONDS + 30))
  until curl -fsS -o /dev/null "http://127.0.0.1:$registry_port/healthz" 2>/dev/null; do
    (( SECONDS < deadline )) || die "the registry did not start"
    sleep 0.2
  done
  # Picked once the registry listens, so that the two cannot be given the same free port.
  gateway_port="$(free_port)"
  log "starting a gateway on :$gateway_port"
  PORT="$gateway_port" REGISTRY_URL="http://127.0.0.1:$registry_port" RUST_LOG=warn \
    RATE_LIMIT_ANON_BURST=1000000000 RATE_LIMIT_ANON_PER_SEC=1000000000 \
    "$AGORA" serve gateway >>"$STREAM_LOG" 2>&1 &
  GATEWAY_PID=$!
  origin_out="$(mktemp -t agora-bench-origin.XXXXXX)"
  python3 "$HERE/stream-origin.py" --registry "http://127.0.0.1:$registry_port" >"$origin_out" 2>>"$STREAM_LOG" &
  ORIGIN_PID=$!
  deadline=$((SECONDS + 30))
  until [[ -s "$origin_out" ]]; do
    (( SECONDS < deadline )) || die "the origin did not start"
    sleep 0.2
  done
  ORIGIN="127.0.0.1:$(awk '{ print $2 }' "$origin_out")"
  rm -f "$origin_out"
  GATEWAY="127.0.0.1:$gateway_port"
  deadline=$((SECONDS + 60))
  until curl -fsS "http://$GATEWAY/joke" 2>/dev/null | grep -q '"ok"'; do
    (( SECONDS < deadline )) || die "the gateway does not route /joke to the origin"
    sleep 0.3
  done
  log "gateway $GATEWAY routes /joke to the origin $ORIGIN"
}

stop_streams() {
  local pid
  for pid in $ORIGIN_PID $GATEWAY_PID $REGISTRY_PID; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in $ORIGIN_PID $GATEWAY_PID $REGISTRY_PID; do
    wait "$pid" 2>/dev/null || true
  done
  ORIGIN_PID="" GATEWAY_PID="" REGISTRY_PID=""
}

stream_cleanup() {
  local rc=$?
  stop_streams
  (( rc == 0 )) || { log "last 20 lines of the stream log:"; tail -n 20 "$STREAM_LOG" >&2; }
  rm -f "$STREAM_LOG"
  ( exit "$rc" )
  cleanup  # lib.sh's: nginx, and the exit status it was called with
}
trap stream_cleanup EXIT

# rss_kib PID: its resident set, in KiB.
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# cpu_ticks PID: user + system CPU time so far, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
