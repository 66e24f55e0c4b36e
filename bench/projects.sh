#!/usr/bin/env bash
# Crowdfunding benchmark, on one `agora up`, on 127.0.0.1 only:
#   - GET /projects/{id} (the project, its tags, and its threads from the threads
#     service over gRPC) directly on the projects service and through the gateway;
#   - votes/s (POST /threads/{id}/vote, random threads, up/down/withdraw);
# with ROWS projects (each with one problem and one solution) proposed through the API first.
#
#   bench/projects.sh [sqlite|postgres]
#
# Environment:
#   ROWS=10000        projects to create before measuring
#   DURATION=10s      length of each measured wrk run     WARMUP=3s  (discarded)
#   THREADS=2         wrk threads       CONNECTIONS=64   wrk connections
#   PG_SERVER=postgres://postgres@127.0.0.1:5432   for `postgres` (databases agora_bench_* are recreated)
#   SKIP_BUILD=1      do not run `cargo build --release -p agora` first
#   PROJECTS_CACHE_TTL_MS=0   measure without the projects service's page cache (default: 10000, on)
#
# Prints a table with the ratios to the reference figures; writes bench/results/projects-<engine>-<date>.json.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
ENGINE="${1:-sqlite}"
ROWS="${ROWS:-10000}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-3s}"
THREADS="${THREADS:-2}"
CONNECTIONS="${CONNECTIONS:-64}"
PG_SERVER="${PG_SERVER:-postgres://postgres@127.0.0.1:5432}"
AGORA="${AGORA:-$ROOT/target/release/agora}"
# Reference (issue 5): FastAPI + asyncpg, 2 workers, GET /projects/{id} from PostgreSQL on this machine.
FASTAPI_RPS=6000

# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

if [[ -z "${SKIP_BUILD:-}" ]]; then
  log "building: cargo build --release -p agora"
  (cd "$ROOT" && cargo build --release -p agora)
fi
[[ -x "$AGORA" ]] || die "no agora binary at $AGORA"
ensure_wrk

case "$ENGINE" in
  sqlite) ;;
  postgres)
    command -v psql >/dev/null || die "psql is required for the postgres run"
    for db in agora_bench_projects agora_bench_threads; do
      psql "$PG_SERVER/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
      psql "$PG_SERVER/postgres" -qc "CREATE DATABASE $db" >/dev/null
    done
    export PROJECTS_DATABASE_URL="$PG_SERVER/agora_bench_projects"
    export THREADS_DATABASE_URL="$PG_SERVER/agora_bench_threads"
    ;;
  *) die "engine must be sqlite or postgres, not $ENGINE" ;;
esac

PORT="$(free_port)"
# The rate limiter stays on (its cost is measured), with limits no load test reaches.
export RATE_LIMIT_ANON_BURST=1000000000 RATE_LIMIT_ANON_PER_SEC=1000000000
export RATE_LIMIT_USER_BURST=1000000000 RATE_LIMIT_USER_PER_SEC=1000000000
export RUST_LOG="${RUST_LOG:-info}"
start_agora "$PORT"
GATEWAY="127.0.0.1:$PORT"

# ---------- a user ----------
CREDS='{"username":"bench","password":"correct horse battery staple"}'
curl -fsS -o /dev/null -H 'content-type: application/json' -d "$CREDS" "http://$GATEWAY/signup" || die "signup failed"
TOKEN="$(curl -fsS -H 'content-type: application/json' -d "$CREDS" "http://$GATEWAY/login" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"

DIRECT="$(curl -fsS "http://$GATEWAY/api/status" | python3 -c '
import json, sys
for s in json.load(sys.stdin).get("services", []):
    if s.get("name") == "projects":
        for i in s.get("instances", []):
            if i.get("healthy"):
                print(i["address"]); sys.exit(0)
')"
[[ "$DIRECT" =~ ^127\.0\.0\.1:[0-9]+$ ]] || die "projects instance address '$DIRECT' is not on 127.0.0.1"
log "gateway $GATEWAY, projects instance $DIRECT, engine $ENGINE"

SCRIPTS="$(mktemp -d -t agora-bench-lua.XXXXXX)"
cat >"$SCRIPTS/propose.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $TOKEN"
wrk.body = '{"project_name":"Popee the Performer","tagline":"an apprentice clown in Wolf Circus","tags":["clown","circus"],"problems":["short temper"],"solutions":["play the drums"]}'
LUA

newest() {
  curl -fsS "http://$GATEWAY/projects?limit=1" | python3 -c 'import json,sys; p=json.load(sys.stdin)["projects"]; print(p[0]["project_id"] if p else 0)'
}

# ---------- seed ----------
log "proposing $ROWS projects through the gateway"
SEED_START=$SECONDS
PROPOSE_RPS=""
while (( $(newest) < ROWS )); do
  out="$(wrk -t2 -c16 -d3s -s "$SCRIPTS/propose.lua" "http://$GATEWAY/projects/propose")"
  [[ -z "$PROPOSE_RPS" ]] && PROPOSE_RPS="$(printf '%s\n' "$out" | parse_wrk | cut -d' ' -f1)"
  (( SECONDS - SEED_START < 600 )) || die "seeding took more than 10 minutes"
done
N="$(newest)"
log "$N projects (proposals through the gateway: $PROPOSE_RPS/s)"

# The ids that exist (a proposal refused while seeding leaves a gap in the sequence), read through the API.
log "reading the project ids through GET /projects"
python3 - "http://$GATEWAY" "$SCRIPTS/ids.lua" <<'PY'
import json, sys, urllib.request
base, out = sys.argv[1], sys.argv[2]
ids, cursor = [], None
while True:
    url = f"{base}/projects?limit=100" + (f"&cursor={cursor}" if cursor else "")
    page = json.load(urllib.request.urlopen(url))
    ids += [p["project_id"] for p in page["projects"]]
    cursor = page.get("next_cursor")
    if not cursor:
        break
with open(out, "w") as f:
    f.write("ids = {" + ",".join(map(str, ids)) + "}\n")
PY
# Each wrk thread draws its own random sequence (the same seed in both would send every id twice at once):
# per_thread_seeds(base) gives wrk thread n the seed base + n.
cat >"$SCRIPTS/seeds.lua" <<'LUA'
function per_thread_seeds(base)
  local threads = 0
  setup = function(thread)
    threads = threads + 1
    thread:set("seed", base + threads)
  end
  init = function(args)
    math.randomseed(seed)
  end
end
LUA
cat >"$SCRIPTS/get.lua" <<LUA
dofile("$SCRIPTS/seeds.lua")
dofile("$SCRIPTS/ids.lua")
per_thread_seeds(42)
request = function()
  return wrk.format("GET", "/projects/" .. ids[math.random(1, #ids)])
end
LUA
cat >"$SCRIPTS/vote.lua" <<LUA
dofile("$SCRIPTS/seeds.lua")
per_thread_seeds(7)
local directions = { "up", "down", "none" }
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $TOKEN"
request = function()
  local body = '{"direction":"' .. directions[math.random(1, 3)] .. '"}'
  return wrk.format(nil, "/threads/" .. math.random(1, 2 * $N) .. "/vote", nil, body)
end
LUA
for url in "http://$DIRECT/projects/1" "http://$GATEWAY/projects/1"; do
  curl -fsS "$url" | grep -q '"threads":\[' || die "GET $url has no threads"
done

# ---------- measure ----------
CPU_BUSY_BEFORE="$(busy_check)"
read -r D_RPS D_P50 D_P99 D_REQS D_NON2XX D_ERRS < <(run_wrk get-direct "http://$DIRECT/" -s "$SCRIPTS/get.lua")
read -r G_RPS G_P50 G_P99 G_REQS G_NON2XX G_ERRS < <(run_wrk get-gateway "http://$GATEWAY/" -s "$SCRIPTS/get.lua")
read -r V_RPS V_P50 V_P99 V_REQS V_NON2XX V_ERRS < <(run_wrk votes-direct "http://$DIRECT/" -s "$SCRIPTS/vote.lua")
read -r W_RPS W_P50 W_P99 W_REQS W_NON2XX W_ERRS < <(run_wrk votes-gateway "http://$GATEWAY/" -s "$SCRIPTS/vote.lua")
rm -rf "$SCRIPTS"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }

echo
printf '%-14s %12s %10s %10s %9s %8s\n' "run ($ENGINE)" "req/s" "p50 ms" "p99 ms" "non-2xx" "sockerr"
printf '%-14s %12s %10s %10s %9s %8s\n' get-direct "$D_RPS" "$D_P50" "$D_P99" "$D_NON2XX" "$D_ERRS"
printf '%-14s %12s %10s %10s %9s %8s\n' get-gateway "$G_RPS" "$G_P50" "$G_P99" "$G_NON2XX" "$G_ERRS"
printf '%-14s %12s %10s %10s %9s %8s\n' votes-direct "$V_RPS" "$V_P50" "$V_P99" "$V_NON2XX" "$V_ERRS"
printf '%-14s %12s %10s %10s %9s %8s\n' votes-gateway "$W_RPS" "$W_P50" "$W_P99" "$W_NON2XX" "$W_ERRS"
echo
echo "project page cache: PROJECTS_CACHE_TTL_MS=${PROJECTS_CACHE_TTL_MS:-10000} (0 = off)"
echo "rows: $N projects, $((2 * N)) threads; proposals seeded at $PROPOSE_RPS/s through the gateway"
echo "GET /projects/{id}: gateway/direct $(ratio "$G_RPS" "$D_RPS"); direct/FastAPI-reference $(ratio "$D_RPS" $FASTAPI_RPS) (target 3); gateway/FastAPI-reference $(ratio "$G_RPS" $FASTAPI_RPS) (target 2)"
if (( D_NON2XX + D_ERRS + G_NON2XX + G_ERRS + V_NON2XX + V_ERRS + W_NON2XX + W_ERRS > 0 )); then
  echo "WARNING: some requests failed (non-2xx or socket errors); throughput includes them"
fi

mkdir -p "$HERE/results"
STAMP="$(date -u +%Y-%m-%dT%H%M%SZ)"
RESULT="$HERE/results/projects-$ENGINE-$STAMP.json"
python3 - "$RESULT" <<PY
import json, sys
def run(rps, p50, p99, reqs, non2xx, errs):
    return {"requests_per_sec": float(rps), "p50_ms": float(p50), "p99_ms": float(p99),
            "requests": int(reqs), "non_2xx": int(non2xx), "socket_errors": int(errs)}
doc = {
    "benchmark": "projects", "engine": "$ENGINE", "date": "$STAMP",
    "commit": "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)",
    "machine": {"cores": $(nproc), "cpu_busy_percent_before": int("$CPU_BUSY_BEFORE")},
    "wrk": {"threads": $THREADS, "connections": $CONNECTIONS, "duration": "$DURATION", "warmup": "$WARMUP"},
    "projects_cache_ttl_ms": int("${PROJECTS_CACHE_TTL_MS:-10000}"),
    "rows": int("$N"), "propose_per_sec_while_seeding": float("${PROPOSE_RPS:-0}"),
    "get_direct": run("$D_RPS", "$D_P50", "$D_P99", "$D_REQS", "$D_NON2XX", "$D_ERRS"),
    "get_gateway": run("$G_RPS", "$G_P50", "$G_P99", "$G_REQS", "$G_NON2XX", "$G_ERRS"),
    "votes_direct": run("$V_RPS", "$V_P50", "$V_P99", "$V_REQS", "$V_NON2XX", "$V_ERRS"),
    "votes_gateway": run("$W_RPS", "$W_P50", "$W_P99", "$W_REQS", "$W_NON2XX", "$W_ERRS"),
    "reference_fastapi_rps": $FASTAPI_RPS,
}
with open(sys.argv[1], "w") as f:
    json.dump(doc, f, indent=2); f.write("\n")
PY
echo "results: ${RESULT#"$ROOT"/}"
