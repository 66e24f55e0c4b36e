#!/usr/bin/env bash
# What the whole system costs when it does nothing, and how fast it starts.
#
#   bench/footprint.sh       # SKIP_BUILD=1 to reuse target/release/agora; STARTS=10, LOAD_SECS=10
#
# One `agora up` (fresh data directory, SQLite, embedded queue) is measured three times:
#   idle   10 s after "Agora is up", no traffic at all;
#   class  after 100 classifications through the gateway (efficientnet-lite0, all finished);
#   jokes  after a LOAD_SECS wrk load on /joke through the gateway (2 threads, 32 connections).
# Each time, `agora up` and every child by name, from /proc/<pid>/smaps_rollup:
#   RSS      resident memory, the shared binary counted in full in every process;
#   PSS      proportional set size: each shared page divided among the processes that map it,
#            so the 110 MB binary is counted once over the whole system (the figure to add up);
#   private  pages no other process maps (Private_Clean + Private_Dirty): what stopping it frees.
# Then the system is started STARTS more times (each on a fresh data directory) and the time from
# launching `agora up` to its "Agora is up" line is reported, with the slowest.
# Memory figures do not depend on the machine's load; start times do (report the load with them).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
AGORA="${AGORA:-$ROOT/target/release/agora}"
STARTS="${STARTS:-10}"
LOAD_SECS="${LOAD_SECS:-10}"
IDLE_SECS="${IDLE_SECS:-10}"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
ensure_wrk >&2
[[ -n "${SKIP_BUILD:-}" ]] || (cd "$ROOT" && cargo build --release -p agora)
[[ -x "$AGORA" ]] || die "no $AGORA; build it (cargo build --release -p agora)"
# The load below comes from one client address: lift the per-IP limits, as bench/gateway.sh does.
export RATE_LIMIT_ANON_BURST=1000000000 RATE_LIMIT_ANON_PER_SEC=1000000000
export RUST_LOG="${RUST_LOG:-info}"
unset DATABASE_URL QUEUE_URL REDIS_URL

# snapshot LABEL: one line per process "label name rss_kb pss_kb private_kb", agora up first.
snapshot() {
  local label="$1" pid name
  for pid in "$AGORA_PID" $(pgrep -P "$AGORA_PID" | sort -n); do
    [[ -r "/proc/$pid/smaps_rollup" ]] || continue
    if [[ "$pid" == "$AGORA_PID" ]]; then
      name="agora-up"
    else
      name="$(tr '\0' ' ' <"/proc/$pid/cmdline" | awk '{ for (i = 1; i < NF; i++) if ($i == "serve") { print $(i + 1); exit } }')"
      [[ -n "$name" ]] || continue
    fi
    awk -v label="$label" -v name="$name" '
      $1 == "Rss:" { rss = $2 } $1 == "Pss:" { pss = $2 }
      $1 == "Private_Clean:" || $1 == "Private_Dirty:" { priv += $2 }
      END { printf "%s %s %d %d %d\n", label, name, rss, pss, priv }
    ' "/proc/$pid/smaps_rollup"
  done
}

classify_100() {
  python3 - "$1" <<'PY'
import json, sys, time, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
images = ["cat", "coffee", "rocket", "motorcycle"]
ids = []
for i in range(100):
    body = json.dumps({"model_id": "efficientnet-lite0", "image_id": images[i % 4]}).encode()
    req = urllib.request.Request(f"{base}/classifications", data=body,
                                 headers={"content-type": "application/json"}, method="POST")
    ids.append(json.load(urllib.request.urlopen(req, timeout=30))["job_id"])
pending, deadline = set(ids), time.time() + 600
while pending:
    assert time.time() < deadline, f"{len(pending)} jobs not finished after 10 minutes"
    for job in list(pending):
        status = json.load(urllib.request.urlopen(f"{base}/classifications/{job}", timeout=30))
        if status["task_status"] in ("finished", "failed"):
            assert status["task_status"] == "finished", status
            pending.discard(job)
    time.sleep(0.1)
PY
}

PORT="$(free_port)"
SNAPSHOTS="$(mktemp -t agora-footprint.XXXXXX)"
log "load before the runs: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
start_agora "$PORT"
log "idle for ${IDLE_SECS} s"
sleep "$IDLE_SECS"
snapshot idle >>"$SNAPSHOTS"
log "100 classifications through the gateway"
classify_100 "$PORT"
snapshot class >>"$SNAPSHOTS"
log "jokes load: wrk -t2 -c32 -d${LOAD_SECS}s /joke"
wrk -t2 -c32 -d"${LOAD_SECS}s" "http://127.0.0.1:$PORT/joke" >&2
snapshot jokes >>"$SNAPSHOTS"
stop_agora

echo
echo "## Memory (MB; PSS counts shared pages once over the system)"
echo
python3 - "$SNAPSHOTS" <<'PY'
import sys
rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
labels = ["idle", "class", "jokes"]
heads = {"idle": "idle", "class": "after 100 classifications", "jokes": "after jokes load"}
names = []
for label, name, *_ in rows:
    if name not in names:
        names.append(name)
data = {(label, name): tuple(int(v) / 1024 for v in values) for label, name, *values in rows}
print("| process | " + " | ".join(f"{heads[l]} RSS / PSS / private" for l in labels) + " |")
print("|---|" + "---|" * len(labels))
def cell(v):
    return "–" if v is None else f"{v[0]:.1f} / {v[1]:.1f} / {v[2]:.1f}"
for name in names:
    print(f"| {name} | " + " | ".join(cell(data.get((l, name))) for l in labels) + " |")
totals = []
for l in labels:
    vals = [v for (label, _), v in data.items() if label == l]
    totals.append(tuple(sum(x[i] for x in vals) for i in range(3)))
print("| **total** | " + " | ".join(f"**{t[0]:.1f} / {t[1]:.1f} / {t[2]:.1f}**" for t in totals) + " |")
PY
rm -f "$SNAPSHOTS"

echo
echo "## Start: launch of \`agora up\` to \"Agora is up\" (fresh data directory each time)"
echo
log "starting the system $STARTS times"
python3 - "$AGORA" "$STARTS" <<'PY'
import os, signal, subprocess, sys, tempfile, time, socket
agora, starts = sys.argv[1], int(sys.argv[2])
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close(); return port
times = []
for n in range(starts):
    with tempfile.TemporaryDirectory() as data:
        port = free_port()
        began = time.perf_counter()
        proc = subprocess.Popen([agora, "up", "--port", str(port), "--data-dir", data],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        up = None
        for line in proc.stdout:
            if "Agora is up" in line:
                up = time.perf_counter() - began
                break
            if "not ready yet" in line:
                break
        proc.send_signal(signal.SIGTERM)
        try:
            proc.stdout.read()
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        if up is None:
            sys.exit(f"start {n + 1}: agora up did not say it was up")
        times.append(up)
        print(f"start {n + 1:2}: {up:5.2f} s", file=sys.stderr)
load = open("/proc/loadavg").read().split()[:3]
print(f"| starts | fastest | median | slowest | load average during the runs |")
print(f"|---|---|---|---|---|")
s = sorted(times)
print(f"| {len(s)} | {s[0]:.2f} s | {s[len(s) // 2]:.2f} s | **{s[-1]:.2f} s** | {' '.join(load)} on {os.cpu_count()} cores |")
PY
