#!/usr/bin/env bash
# End-to-end classification throughput: jobs/s with 1 and 2 worker processes,
# on the embedded (SQLite) queue and on Redis. Everything on 127.0.0.1.
#
#   bench/classify.sh            # JOBS=120 MODEL=efficientnet-lite0 SKIP_BUILD=1 to reuse a build
#
# Each run: start `agora serve classifier` and N `agora serve classifier-worker`
# on a fresh queue, enqueue JOBS sample jobs through the API, and time until
# the last one is finished (client polls every 5 ms).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
JOBS="${JOBS:-120}"
MODEL="${MODEL:-efficientnet-lite0}"
REDIS="${REDIS_URL:-redis://127.0.0.1:6379/9}"
AGORA="$ROOT/target/release/agora"
[[ -n "${SKIP_BUILD:-}" ]] || (cd "$ROOT" && cargo build --release -p agora)

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

run() { # backend workers
  local backend=$1 workers=$2 dir port queue_url=""
  dir=$(mktemp -d); port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  if [[ $backend == redis ]]; then queue_url=$REDIS; redis-cli -u "$REDIS" flushdb >/dev/null; fi
  PIDS=()
  QUEUE_URL=$queue_url DATA_DIR=$dir PORT=$port RUST_LOG=warn "$AGORA" serve classifier >/dev/null 2>&1 & PIDS+=($!)
  for _ in $(seq "$workers"); do
    CLASSIFIER_PRELOAD=1 QUEUE_URL=$queue_url DATA_DIR=$dir RUST_LOG=warn "$AGORA" serve classifier-worker >/dev/null 2>&1 & PIDS+=($!)
  done
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
  sleep 1 # workers load their models (CLASSIFIER_PRELOAD=1: not in the first jobs' time)
  python3 - "$port" "$JOBS" "$MODEL" "$backend" "$workers" <<'PY'
import json, sys, time, urllib.request, concurrent.futures as cf
port, jobs, model, backend, workers = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
base = f"http://127.0.0.1:{port}"
images = ["cat", "coffee", "rocket", "motorcycle"]
def enqueue(i):
    req = urllib.request.Request(f"{base}/classifications", data=json.dumps({"model_id": model, "image_id": images[i % 4]}).encode(),
                                 headers={"content-type": "application/json"}, method="POST")
    return json.load(urllib.request.urlopen(req))["job_id"]
start = time.perf_counter()
with cf.ThreadPoolExecutor(8) as pool:
    ids = list(pool.map(enqueue, range(jobs)))
pending = set(ids)
while pending:
    for i in list(pending):
        s = json.load(urllib.request.urlopen(f"{base}/classifications/{i}"))
        if s["task_status"] in ("finished", "failed"):
            assert s["task_status"] == "finished", s
            pending.discard(i)
    time.sleep(0.005)
elapsed = time.perf_counter() - start
print(f"{backend:8} workers={workers}  {jobs} jobs in {elapsed:6.2f} s  = {jobs/elapsed:7.1f} jobs/s")
PY
  cleanup
}

echo "model $MODEL, $JOBS jobs per run, $(nproc) cores"
for backend in sqlite redis; do for w in 1 2; do run $backend $w; done; done
