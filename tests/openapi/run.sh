#!/usr/bin/env bash
# The API contract gate: schemathesis (`run --checks all`, every phase, stateful included) against
# every OpenAPI document of a real `agora up`.
#
#   tests/openapi/run.sh [path/to/agora]   (default: target/debug/agora)
#
# - schemathesis comes from PyPI (the only network access), pinned, in a venv under target/;
# - `agora up` runs on a free port with a throw-away data directory, rate limits lifted;
# - a bearer token comes from the API itself (POST /signup, POST /login);
# - the public documents are those the gateway lists at /docs (its own and every routed service's,
#   so a new service's document joins the gate by being routed); each is fuzzed through the
#   gateway with the token; tests/openapi/hooks.py gives the account forms their CSRF cookie;
# - the registry's document (internal, never routed) is fuzzed last, on the registry's own port;
# - every operation of every document must have had cases (the count per operation is printed),
#   and schemathesis must report no failure: no contract violation and no 5xx.
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
AGORA="${1:-$ROOT/target/debug/agora}"

log() { printf '[openapi] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ -x "$AGORA" ]] || die "no agora binary at $AGORA (build it: cargo build -p agora)"
START=$(date +%s)

VENV="$ROOT/target/schemathesis-venv"
if [[ "$("$VENV/bin/schemathesis" --version 2>/dev/null || true)" != *"$SCHEMATHESIS_VERSION"* ]]; then
  log "installing schemathesis $SCHEMATHESIS_VERSION (PyPI) into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
ST="$VENV/bin/schemathesis"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/agora-openapi-XXXXXX")"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"
AGORA_PID=""

stop_agora() {
  [[ -n "$AGORA_PID" ]] || return 0
  kill -TERM "$AGORA_PID" 2>/dev/null || true
  for _ in $(seq 1 300); do kill -0 "$AGORA_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$AGORA_PID" 2>/dev/null; then
    log "agora did not stop within 30 s of SIGTERM"
    kill -KILL "$AGORA_PID" 2>/dev/null || true
  fi
  wait "$AGORA_PID" 2>/dev/null || true
  AGORA_PID=""
}
on_exit() {
  local status=$?
  stop_agora
  if [[ $status -ne 0 ]]; then
    log "failed; agora's log and the reports are kept in $WORK (last 40 log lines:)"
    tail -n 40 "$WORK/agora.log" >&2 || true
  else
    rm -rf "$WORK"
  fi
}
trap on_exit EXIT

# Rate limits lifted (the gateway's, and the auth service's throttling of failed logins): the gate
# sends thousands of requests from one address and one user, hundreds of them failed logins.
log "starting agora up on $BASE"
RATE_LIMIT_ANON_BURST=1000000 RATE_LIMIT_ANON_PER_SEC=1000000 \
  RATE_LIMIT_USER_BURST=1000000 RATE_LIMIT_USER_PER_SEC=1000000 \
  AUTH_MAX_FAILURES_PER_USER=1000000 AUTH_MAX_FAILURES_PER_IP=1000000 \
  LOG_FORMAT=json \
  "$AGORA" up --port "$PORT" --data-dir "$WORK/data" >"$WORK/agora.log" 2>&1 &
AGORA_PID=$!
for _ in $(seq 1 1200); do
  grep -q "Agora is up: $BASE" "$WORK/agora.log" && break
  kill -0 "$AGORA_PID" 2>/dev/null || die "agora exited before it was up"
  sleep 0.1
done
grep -q "Agora is up: $BASE" "$WORK/agora.log" || die "agora was not up within 120 s"
REGISTRY="$(grep -m1 '"listening"' "$WORK/agora.log" | grep -o '127\.0\.0\.1:[0-9]*' | head -1 || true)"
grep -m1 '"listening"' "$WORK/agora.log" | grep -q registry || die "cannot find the registry's address in the log"
[[ -n "$REGISTRY" ]] || die "cannot find the registry's address in the log"
log "up; the registry listens on $REGISTRY"

# A user of the API, and its token.
USERNAME="schemathesis-$RANDOM$RANDOM"
PASSWORD="gate-password-$RANDOM$RANDOM"
curl -fsS -o /dev/null -H 'Content-Type: application/json' \
  -d "{\"username\":\"$USERNAME\",\"password\":\"$PASSWORD\"}" "$BASE/signup"
TOKEN="$(curl -fsS -H 'Content-Type: application/json' \
  -d "{\"username\":\"$USERNAME\",\"password\":\"$PASSWORD\"}" "$BASE/login" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')"
[[ -n "$TOKEN" ]] || die "no token from POST /login"

# The public documents, as /docs lists them.
DOCS="$(curl -fsS "$BASE/docs/swagger-initializer.js" | grep -o '/openapi/[a-z0-9-]*\.json' | sort -u)"
[[ -n "$DOCS" ]] || die "/docs lists no document"
curl -fsS -o "$WORK/merged.json" "$BASE/openapi.json" || die "the merged /openapi.json is not served"

export SCHEMATHESIS_HOOKS="$HERE/hooks.py"
FAILED=()

# Operations whose answer never ends cannot be fuzzed: schemathesis reads a whole body, and an
# event stream has no end (it would hang the gate). Their own tests cover them (notifications'
# stream tests and the gateway's stream system tests). The only exclusion.
ENDLESS="GET /notifications/stream"
export AGORA_ENDLESS="$ENDLESS"

# fuzz NAME DOCUMENT_URL BASE_URL [schemathesis options…]
fuzz() {
  local name=$1 doc=$2 base=$3
  shift 3
  local counts="$WORK/$name.counts" started
  started=$(date +%s)
  curl -fsS -o "$WORK/$name.json" "$doc" || die "cannot fetch $doc"
  log "$name: schemathesis run --checks all $doc"
  : >"$counts"
  # Run from the work directory: schemathesis leaves its own files in the current one.
  if ! (cd "$WORK" && AGORA_CASE_COUNTS="$counts" "$ST" --config-file "$HERE/schemathesis.toml" run "$doc" --url "$base" --checks all \
    --phases examples,coverage,fuzzing,stateful --workers 2 --no-color --generation-database none \
    --report junit --report-junit-path "$WORK/$name.junit.xml" --exclude-name "$ENDLESS" "$@"); then
    FAILED+=("$name")
  fi
  # Cases per operation; an operation without any is a failure of the gate.
  if ! python3 - "$WORK/$name.json" "$counts" "$name" <<'EOF'; then
import collections, json, os, re, sys

doc, counts, name = json.load(open(sys.argv[1])), open(sys.argv[2]).read().split("\n"), sys.argv[3]
endless = {label for label in os.environ.get("AGORA_ENDLESS", "").split("\n") if label}
seen = collections.Counter(line for line in counts if line)
templates = {}
for path, item in doc.get("paths", {}).items():
    for method in ("get", "put", "post", "delete", "patch", "head", "options"):
        if method in item and f"{method.upper()} {path}" not in endless:
            pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)) + "$"
            templates[f"{method.upper()} {path}"] = (method.upper(), re.compile(pattern))
cases = collections.Counter()
for line, n in seen.items():
    method, _, path = line.partition(" ")
    for label, (m, pattern) in templates.items():
        if m == method and pattern.match(path):
            cases[label] += n
            break
width = max(map(len, templates), default=0)
for label in sorted(templates, key=lambda l: l.split(" ", 1)[::-1]):
    print(f"  {name}: {label:<{width}}  {cases[label]:>6} cases")
missing = [label for label in templates if cases[label] == 0]
if missing:
    print(f"  {name}: no case for {', '.join(missing)}", file=sys.stderr)
    sys.exit(1)
EOF
    FAILED+=("$name (operations without cases)")
  fi
  log "$name: $(($(date +%s) - started)) s"
}

for doc in $DOCS; do
  name="$(basename "$doc" .json)"
  fuzz "$name" "$BASE$doc" "$BASE" -H "Authorization: Bearer $TOKEN"
done
# Last: its stateful phase registers instances, which must not disturb the public runs.
fuzz registry "http://$REGISTRY/openapi.json" "http://$REGISTRY"

if grep -q '"level":"ERROR"' "$WORK/agora.log"; then
  log "errors in agora's log:"
  grep '"level":"ERROR"' "$WORK/agora.log" | tail -n 20 >&2
fi
log "done in $(($(date +%s) - START)) s"
if [[ ${#FAILED[@]} -gt 0 ]]; then
  die "contract violations in: ${FAILED[*]} (reports in $WORK)"
fi
log "every document holds: no failure, no 5xx, every operation tested"
