# Shared by the stream benchmarks (sse-fanout.sh, stream-1gib.sh): bench/stream-origin.py, and a
# gateway (the `gateway` example: the gateway alone, as `agora serve gateway` runs it) that finds
# the origin as its one instance of `jokes` through static peers (`PEERS`), so the standard route
# /joke leads to it. Source it after lib.sh; it expects ROOT and HERE.

GATEWAY_BIN="${GATEWAY_BIN:-$ROOT/target/release/examples/gateway}"
GATEWAY_PID="" ORIGIN_PID=""
STREAM_LOG="$(mktemp -t agora-bench-stream.XXXXXX)"

build_gateway() {
  if [[ -z "${SKIP_BUILD:-}" ]]; then
    log "building: cargo build --release -p gateway --example gateway"
    (cd "$ROOT" && cargo build --release -p gateway --example gateway)
  fi
  [[ -x "$GATEWAY_BIN" ]] || die "no gateway binary at $GATEWAY_BIN"
}

# start_streams: starts the origin and the gateway; sets ORIGIN and GATEWAY (host:port) and GATEWAY_PID.
start_streams() {
  local origin_out gateway_port deadline
  origin_out="$(mktemp -t agora-bench-origin.XXXXXX)"
  python3 "$HERE/stream-origin.py" >"$origin_out" 2>>"$STREAM_LOG" &
  ORIGIN_PID=$!
  deadline=$((SECONDS + 30))
  until [[ -s "$origin_out" ]]; do
    (( SECONDS < deadline )) || die "the origin did not start"
    sleep 0.2
  done
  ORIGIN="127.0.0.1:$(awk '{ print $2 }' "$origin_out")"
  rm -f "$origin_out"
  # Picked once the origin listens, so that the two cannot be given the same free port.
  gateway_port="$(free_port)"
  log "starting a gateway on :$gateway_port in front of the origin $ORIGIN (log: $STREAM_LOG)"
  PORT="$gateway_port" PEERS="jokes=http://$ORIGIN" RUST_LOG=warn \
    RATE_LIMIT_ANON_BURST=1000000000 RATE_LIMIT_ANON_PER_SEC=1000000000 \
    "$GATEWAY_BIN" >>"$STREAM_LOG" 2>&1 &
  GATEWAY_PID=$!
  GATEWAY="127.0.0.1:$gateway_port"
  deadline=$((SECONDS + 60))
  until curl -fsS "http://$GATEWAY/joke" 2>/dev/null | grep -q '"ok"'; do
    kill -0 "$GATEWAY_PID" 2>/dev/null || die "the gateway exited"
    (( SECONDS < deadline )) || die "the gateway does not route /joke to the origin"
    sleep 0.3
  done
  log "gateway $GATEWAY routes /joke to the origin $ORIGIN"
}

stop_streams() {
  local pid
  for pid in $ORIGIN_PID $GATEWAY_PID; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in $ORIGIN_PID $GATEWAY_PID; do
    wait "$pid" 2>/dev/null || true
  done
  ORIGIN_PID="" GATEWAY_PID=""
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
