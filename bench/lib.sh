# Shared by the benchmark scripts: start and stop one `agora up`, check the
# machine is quiet, run wrk and parse its output. Source it; it expects ROOT.

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

ensure_wrk() {
  if ! command -v wrk >/dev/null; then
    log "installing wrk (apt)"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y wrk
  fi
  command -v curl >/dev/null || die "curl is required"
  command -v python3 >/dev/null || die "python3 is required"
}

ensure_nginx() {
  if ! command -v nginx >/dev/null; then
    log "installing nginx (apt), the reference proxy"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y nginx-light \
      || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y nginx
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

AGORA_PID=""
DATA_DIR="$(mktemp -d -t agora-bench-data.XXXXXX)"
AGORA_LOG="$(mktemp -t agora-bench-log.XXXXXX)"

# The gateway's access log goes to a file of its own, as nginx's does in start_nginx (set
# ACCESS_LOG_FILE= to measure it going through agora up's merged output instead).
export ACCESS_LOG_FILE="${ACCESS_LOG_FILE-$DATA_DIR/gateway-access.log}"

# start_agora PORT [agora up args...]: starts it and waits for "Agora is up".
start_agora() {
  local port="$1"; shift
  log "starting agora up on 127.0.0.1:$port $* (log: $AGORA_LOG)"
  "$AGORA" up --port "$port" --data-dir "$DATA_DIR" "$@" >"$AGORA_LOG" 2>&1 &
  AGORA_PID=$!
  local deadline=$((SECONDS + 90))
  until grep -q "Agora is up: http://127.0.0.1:$port" "$AGORA_LOG" 2>/dev/null; do
    kill -0 "$AGORA_PID" 2>/dev/null || die "agora exited before it was up"
    (( SECONDS < deadline )) || die "agora was not up within 90 s"
    sleep 0.2
  done
}

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

# jokes_instance GATEWAY_PORT: waits (up to 60 s) for a healthy jokes instance in the gateway's
# /api/status and prints its host:port; refuses anything not on 127.0.0.1.
jokes_instance() {
  local port="$1" direct="" deadline=$((SECONDS + 60))
  until [[ -n "$direct" ]]; do
    direct="$(curl -fsS "http://127.0.0.1:$port/api/status" | python3 -c '
import json, sys
for s in json.load(sys.stdin).get("services", []):
    if s.get("name") == "jokes":
        for i in s.get("instances", []):
            if i.get("healthy"):
                print(i["address"]); sys.exit(0)
' || true)"
    [[ -n "$direct" ]] && break
    (( SECONDS < deadline )) || die "no healthy jokes instance in /api/status"
    sleep 0.5
  done
  [[ "$direct" =~ ^127\.0\.0\.1:[0-9]+$ ]] || die "jokes instance address $direct is not on 127.0.0.1; refusing to benchmark it"
  echo "$direct"
}

NGINX_DIR=""
# start_nginx PORT UPSTREAM [DIRECTIVES]: nginx as a reverse proxy on 127.0.0.1:PORT in front
# of UPSTREAM (host:port), configured as the reference is: one worker per core,
# upstream keepalive, access log on (buffered, as a production nginx would be);
# DIRECTIVES are added to its location.
start_nginx() {
  local port="$1" upstream="$2" directives="${3:-}"
  NGINX_DIR="$(mktemp -d -t agora-bench-nginx.XXXXXX)"
  cat >"$NGINX_DIR/nginx.conf" <<CONF
worker_processes auto;
pid $NGINX_DIR/nginx.pid;
error_log $NGINX_DIR/error.log warn;
events { worker_connections 4096; }
http {
  access_log $NGINX_DIR/access.log combined buffer=64k flush=1s;
  client_body_temp_path $NGINX_DIR/body;
  proxy_temp_path $NGINX_DIR/proxy;
  fastcgi_temp_path $NGINX_DIR/fastcgi;
  uwsgi_temp_path $NGINX_DIR/uwsgi;
  scgi_temp_path $NGINX_DIR/scgi;
  upstream jokes { server $upstream; keepalive 64; }
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://jokes;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      $directives
    }
  }
}
CONF
  log "starting nginx on 127.0.0.1:$port in front of $upstream"
  nginx -c "$NGINX_DIR/nginx.conf" -p "$NGINX_DIR" || die "nginx did not start"
  local deadline=$((SECONDS + 10))
  until curl -fsS -o /dev/null "http://127.0.0.1:$port/joke" 2>/dev/null; do
    (( SECONDS < deadline )) || die "nginx did not answer within 10 s"
    sleep 0.2
  done
}

stop_nginx() {
  [[ -n "$NGINX_DIR" && -f "$NGINX_DIR/nginx.pid" ]] || return 0
  kill -TERM "$(cat "$NGINX_DIR/nginx.pid")" 2>/dev/null || true
  sleep 0.3
  rm -rf "$NGINX_DIR"
  NGINX_DIR=""
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  stop_nginx
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
  others="$(pgrep -x rustc 2>/dev/null | wc -l || true)"
  if (( others > 0 || busy > 15 )); then
    log "WARNING: machine busy before the runs (CPU ${busy}% busy, $others rustc processes): numbers will be low"
  fi
  echo "$busy"
}
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

# run_wrk NAME URL [extra wrk args...]: warm-up, then a measured run; prints parse_wrk's line.
run_wrk() {
  local name="$1" url="$2" out; shift 2
  log "warm-up $name ($WARMUP): $url $*"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "$@" "$url" >/dev/null
  log "measuring $name: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency $* $url"
  out="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url")"
  printf '%s\n' "--- wrk: $name ($url) ---" "$out" >&2
  printf '%s\n' "$out" | parse_wrk
}
