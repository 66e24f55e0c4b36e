#!/usr/bin/env bash
# Job queue benchmark: the `queue_bench` example against both backends
# (embedded SQLite in a temp dir, and Redis), compared with Python rq + Redis
# measured on this machine.
#
#   bench/queue.sh
#
# Environment:
#   JOBS=20000        jobs per drain measurement (and enqueued for the enqueue rate)
#   WORKERS=2         worker tasks for the second drain measurement (the first uses 1)
#   ROUND_TRIPS=500   single-job round trips measured (after 20 discarded)
#   RUNS=3            runs per backend; the table shows the median of each figure
#   BACKENDS="sqlite redis"
#   REDIS_URL=redis://127.0.0.1:6379
#   SKIP_BUILD=1      do not run `cargo build --release -p kit --example queue_bench` first
#
# Prints a table; writes bench/results/queue-<date>.json with every run.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
JOBS="${JOBS:-20000}"
WORKERS="${WORKERS:-2}"
ROUND_TRIPS="${ROUND_TRIPS:-500}"
RUNS="${RUNS:-3}"
BACKENDS="${BACKENDS:-sqlite redis}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
BENCH="$ROOT/target/release/examples/queue_bench"

# Python rq 1.x + Redis on this machine (no-op jobs, `rq worker` processes, burst mode).
RQ_ENQUEUE=3100
RQ_DRAIN_1=360
RQ_DRAIN_2=650
RQ_ROUND_TRIP_MS=22

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v python3 >/dev/null || die "python3 is required"
if [[ -z "${SKIP_BUILD:-}" ]]; then
  log "building: cargo build --release -p kit --example queue_bench"
  (cd "$ROOT" && cargo build --release -p kit --example queue_bench)
fi
[[ -x "$BENCH" ]] || die "no benchmark binary at $BENCH"
if [[ " $BACKENDS " == *" redis "* ]]; then
  host_port="${REDIS_URL#redis://}"; host_port="${host_port##*@}"; host_port="${host_port%%/*}"
  if command -v redis-cli >/dev/null && ! redis-cli -h "${host_port%%:*}" -p "${host_port##*:}" ping >/dev/null 2>&1; then
    die "Redis is not reachable at $REDIS_URL (start it, or set BACKENDS=sqlite)"
  fi
fi

# The benchmark, Redis and anything else running share the cores: a busy machine halves the numbers.
cpu_busy() {
  local a b
  a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
  awk -v u=$((b[1]+b[2]+b[3]+b[6]+b[7] - a[1]-a[2]-a[3]-a[6]-a[7])) \
      -v t=$((b[1]+b[2]+b[3]+b[4]+b[5]+b[6]+b[7] - a[1]-a[2]-a[3]-a[4]-a[5]-a[6]-a[7])) \
      'BEGIN { printf "%.0f", (t > 0 ? 100 * u / t : 0) }'
}
CPU_BUSY_BEFORE="$(cpu_busy)"
RUSTC_BEFORE="$(pgrep -x rustc 2>/dev/null | wc -l || true)"
if (( RUSTC_BEFORE > 0 || CPU_BUSY_BEFORE > 15 )); then
  log "WARNING: machine busy before the runs (CPU ${CPU_BUSY_BEFORE}% busy, $RUSTC_BEFORE rustc processes): numbers will be low"
fi

OUT="$(mktemp -t queue-bench.XXXXXX)"
trap 'rm -f "$OUT"' EXIT
for backend in $BACKENDS; do
  for run in $(seq 1 "$RUNS"); do
    log "$backend, run $run/$RUNS: $JOBS jobs, 1 and $WORKERS workers, $ROUND_TRIPS round trips"
    "$BENCH" --backend "$backend" --jobs "$JOBS" --workers "$WORKERS" --round-trips "$ROUND_TRIPS" \
      --redis-url "$REDIS_URL" | tee /dev/stderr | tail -1 >>"$OUT"
  done
done

mkdir -p "$HERE/results"
STAMP="$(date -u +%Y-%m-%dT%H%M%SZ)"
RESULT="$HERE/results/queue-$STAMP.json"
COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
DIRTY="$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo true || echo false)"
CPU="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo unknown)"

python3 - "$OUT" "$RESULT" <<EOF
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
rq = {"enqueue_per_sec": $RQ_ENQUEUE, "drain_1_per_sec": $RQ_DRAIN_1, "drain_w_per_sec": $RQ_DRAIN_2,
      "round_trip_p50_ms": $RQ_ROUND_TRIP_MS}
figures = ["enqueue_per_sec", "drain_1_per_sec", "drain_w_per_sec", "round_trip_p50_ms", "round_trip_p99_ms"]
medians = {}
for backend in "$BACKENDS".split():
    mine = [r for r in runs if r["backend"] == backend]
    if mine:
        medians[backend] = {f: statistics.median(r[f] for r in mine if r.get(f) is not None) for f in figures}

def row(name, values):
    print(f"{name:<22}" + "".join(f"{v:>16}" for v in values))

print()
print(f"median of $RUNS runs; $JOBS jobs; drains with 1 and $WORKERS worker tasks (each its own connection); "
      f"$(nproc) cores")
row("", ["enqueue/s", "drain 1 wkr/s", "drain $WORKERS wkr/s", "round trip p50", "p99"])
row("rq + Redis (ref.)", [rq["enqueue_per_sec"], rq["drain_1_per_sec"], rq["drain_w_per_sec"] if $WORKERS == 2 else "-",
                          f"{rq['round_trip_p50_ms']} ms", "-"])
for backend, m in medians.items():
    row(f"agora {backend}", [f"{m['enqueue_per_sec']:.0f}", f"{m['drain_1_per_sec']:.0f}", f"{m['drain_w_per_sec']:.0f}",
                             f"{m['round_trip_p50_ms']:.2f} ms", f"{m['round_trip_p99_ms']:.2f} ms"])
if "redis" in medians:
    m = medians["redis"]
    print()
    print(f"Redis backend vs rq: enqueue {m['enqueue_per_sec'] / rq['enqueue_per_sec']:.1f}x, "
          f"drain with 1 worker {m['drain_1_per_sec'] / rq['drain_1_per_sec']:.1f}x"
          + (f", with 2 workers {m['drain_w_per_sec'] / rq['drain_w_per_sec']:.1f}x" if $WORKERS == 2 else "")
          + f", round trip p50 {m['round_trip_p50_ms']:.2f} ms vs {rq['round_trip_p50_ms']} ms")

doc = {
    "benchmark": "queue",
    "date": "$STAMP",
    "commit": "$COMMIT",
    "dirty": $( [[ $DIRTY == true ]] && echo True || echo False ),
    "machine": {"cores": $(nproc), "cpu": "$CPU", "cpu_busy_percent_before": int("$CPU_BUSY_BEFORE"),
                "rustc_processes_before": int("$RUSTC_BEFORE")},
    "settings": {"jobs": $JOBS, "workers": $WORKERS, "round_trips": $ROUND_TRIPS, "runs": $RUNS},
    "rq_reference": rq,
    "medians": medians,
    "runs": runs,
}
with open(sys.argv[2], "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
EOF
echo "results: ${RESULT#"$ROOT"/}"
