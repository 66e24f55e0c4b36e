#!/usr/bin/env bash
# A database outage as users see it, through the gateway of one `agora up`, on 127.0.0.1 only:
# the projects service's PostgreSQL database is reached through the kit's fault proxy
# (`crates/kit/examples/fault_proxy.rs`), which refuses, resets or black-holes its connections
# for OUTAGE seconds (the shared PostgreSQL server keeps running). Meanwhile CLIENTS clients
# read GET /projects (needs the database) and GET /projects/{id} (anonymous: the page cache)
# in a loop. Per kind of outage it prints the p50/p99 latency of the answers during the
# outage, what they were (503 with Retry-After, stale 200s), the first request's latency, and
# the time from the database's return to the first 2xx of GET /projects.
#
#   bench/outage.sh [refuse|reset|blackhole ...]      (default: all three, one after the other)
#
# Environment:
#   OUTAGE=10        seconds of each outage      CLIENTS=8   concurrent clients
#   PG_SERVER=postgres://postgres@127.0.0.1:5432   (database agora_bench_outage is recreated)
#   AGORA=target/release/agora    FAULT_PROXY=target/release/examples/fault_proxy
#   SKIP_BUILD=1     do not build them first
# Writes bench/results/outage-<date>.json.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
KINDS=("$@")
(( ${#KINDS[@]} )) || KINDS=(refuse reset blackhole)
OUTAGE="${OUTAGE:-10}"
CLIENTS="${CLIENTS:-8}"
PG_SERVER="${PG_SERVER:-postgres://postgres@127.0.0.1:5432}"
AGORA="${AGORA:-$ROOT/target/release/agora}"
FAULT_PROXY="${FAULT_PROXY:-$ROOT/target/release/examples/fault_proxy}"

# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

if [[ -z "${SKIP_BUILD:-}" ]]; then
  log "building: cargo build --release -p agora, and the fault proxy"
  (cd "$ROOT" && cargo build --release -p agora \
    && cargo build --release -p kit --features test-support --example fault_proxy)
fi
[[ -x "$AGORA" ]] || die "no agora binary at $AGORA"
[[ -x "$FAULT_PROXY" ]] || die "no fault proxy at $FAULT_PROXY"
command -v psql >/dev/null || die "psql is required"
command -v python3 >/dev/null || die "python3 is required"

psql "$PG_SERVER/postgres" -qc "DROP DATABASE IF EXISTS agora_bench_outage WITH (FORCE)" >/dev/null
psql "$PG_SERVER/postgres" -qc "CREATE DATABASE agora_bench_outage" >/dev/null
PG_HOSTPORT="$(python3 -c 'import sys, urllib.parse as u; p = u.urlparse(sys.argv[1]); print(f"{p.hostname}:{p.port or 5432}")' "$PG_SERVER")"

# The fault proxy reads its commands from a FIFO that this script keeps open (fd 3).
PROXY_PORT="$(free_port)"
CONTROL="$DATA_DIR/fault-control"
mkfifo "$CONTROL"
"$FAULT_PROXY" "127.0.0.1:$PROXY_PORT" "$PG_HOSTPORT" <"$CONTROL" >"$DATA_DIR/fault-proxy.log" 2>&1 &
PROXY_PID=$!
exec 3>"$CONTROL"
cleanup() { exec 3>&-; kill "$PROXY_PID" 2>/dev/null || true; stop_agora || true; }
trap cleanup EXIT

# The projects service's database URL with the proxy's port in place of the server's.
export PROJECTS_DATABASE_URL
PROJECTS_DATABASE_URL="$(python3 -c 'import sys, urllib.parse as u; p = u.urlparse(sys.argv[1]); print(p._replace(netloc=(p.netloc.rsplit("@", 1)[0] + "@" if "@" in p.netloc else "") + "127.0.0.1:" + sys.argv[2], path="/agora_bench_outage").geturl())' "$PG_SERVER" "$PROXY_PORT")"
export RATE_LIMIT_ANON_BURST=1000000000 RATE_LIMIT_ANON_PER_SEC=1000000000
export RATE_LIMIT_USER_BURST=1000000000 RATE_LIMIT_USER_PER_SEC=1000000000
PORT="$(free_port)"
start_agora "$PORT"
GATEWAY="127.0.0.1:$PORT"

CREDS='{"username":"outage-bench","password":"correct horse battery staple"}'
curl -fsS -o /dev/null -H 'content-type: application/json' -d "$CREDS" "http://$GATEWAY/signup" || die "signup failed"
TOKEN="$(curl -fsS -H 'content-type: application/json' -d "$CREDS" "http://$GATEWAY/login" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')"
PROJECT="$(curl -fsS -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  -d '{"project_name":"Outage","tagline":"still readable","problems":["p"],"solutions":["s"],"tags":["t"]}' \
  "http://$GATEWAY/projects/propose" | python3 -c 'import json, sys; print(json.load(sys.stdin)["project_id"])')"
log "project $PROJECT proposed; database through the fault proxy on 127.0.0.1:$PROXY_PORT"

RESULT="$HERE/results/outage-$(date -u +%Y%m%dT%H%M%SZ).json"
mkdir -p "$HERE/results"
python3 - "$GATEWAY" "$PROJECT" "$CONTROL" "$OUTAGE" "$CLIENTS" "$RESULT" "$(git -C "$ROOT" rev-parse --short HEAD)" "${KINDS[@]}" <<'PY'
import http.client, json, statistics, sys, threading, time

gateway, project, control, outage, clients, result_path, commit = sys.argv[1:8]
kinds = sys.argv[8:]
outage, clients = float(outage), int(clients)
host, port = gateway.split(":")

def request(path):
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    start = time.monotonic()
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        status = resp.status
        retry_after = resp.getheader("retry-after")
        stale = b'"stale":true' in body
    except Exception:
        status, retry_after, stale = 0, None, False
    finally:
        conn.close()
    return start, time.monotonic(), status, retry_after, stale

def fault(command):
    with open(control, "w") as f:
        f.write(command + "\n")

def pct(values, p):
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(p / 100 * len(values)))] * 1000, 1)

report = {"commit": commit, "outage_secs": outage, "clients": clients, "runs": []}
for kind in kinds:
    samples = []
    stop = threading.Event()
    lock = threading.Lock()
    def client(i):
        path = "/projects" if i % 2 == 0 else f"/projects/{project}"
        while not stop.is_set():
            s = request(path)
            with lock:
                samples.append((path,) + s)
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    time.sleep(3)
    began = time.monotonic()
    fault({"blackhole": "blackhole"}.get(kind, kind))
    time.sleep(outage)
    ended = time.monotonic()
    fault("pass")
    # Until GET /projects answers 2xx again, then 2 s more.
    first_ok = None
    deadline = ended + 60
    while time.monotonic() < deadline and first_ok is None:
        time.sleep(0.02)
        with lock:
            oks = [s[2] for s in samples if s[0] == "/projects" and s[1] >= ended and 200 <= s[3] < 300]
        if oks:
            first_ok = min(oks)
    time.sleep(2)
    stop.set()
    for t in threads:
        t.join()
    during = [s for s in samples if began <= s[1] and s[2] <= ended]
    listing = [s for s in during if s[0] == "/projects"]
    pages = [s for s in during if s[0] != "/projects"]
    first = min(listing, key=lambda s: s[1]) if listing else None
    run = {
        "kind": kind,
        "listing": {
            "requests": len(listing),
            "p50_ms": pct([s[2] - s[1] for s in listing], 50),
            "p99_ms": pct([s[2] - s[1] for s in listing], 99),
            "max_ms": pct([s[2] - s[1] for s in listing], 100),
            "first_ms": round((first[2] - first[1]) * 1000, 1) if first else None,
            "statuses": {str(k): sum(1 for s in listing if s[3] == k) for k in sorted({s[3] for s in listing})},
            "503_with_retry_after": sum(1 for s in listing if s[3] == 503 and s[4]),
        },
        "page": {
            "requests": len(pages),
            "p50_ms": pct([s[2] - s[1] for s in pages], 50),
            "p99_ms": pct([s[2] - s[1] for s in pages], 99),
            "statuses": {str(k): sum(1 for s in pages if s[3] == k) for k in sorted({s[3] for s in pages})},
            "stale": sum(1 for s in pages if s[5]),
        },
        "first_2xx_after_return_ms": round((first_ok - ended) * 1000, 1) if first_ok else None,
    }
    report["runs"].append(run)
    print(json.dumps(run))
    time.sleep(3)

with open(result_path, "w") as f:
    json.dump(report, f, indent=2)
print()
print(f"{'outage':<10} {'GET /projects p50':>18} {'p99':>8} {'first':>8} {'503+RA':>8} {'others':>8} {'page p50':>9} {'p99':>8} {'stale':>6} {'2xx after':>10}")
for r in report["runs"]:
    l, p = r["listing"], r["page"]
    others = l["requests"] - l["503_with_retry_after"]
    print(f"{r['kind']:<10} {l['p50_ms']:>16}ms {l['p99_ms']:>6}ms {l['first_ms']:>6}ms {l['503_with_retry_after']:>8} {others:>8} {p['p50_ms']:>7}ms {p['p99_ms']:>6}ms {p['stale']:>6} {r['first_2xx_after_return_ms']:>8}ms")
PY
log "wrote $RESULT"
