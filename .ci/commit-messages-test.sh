#!/usr/bin/env bash
# Tests .ci/commit-messages.sh on throw-away repositories: a good history
# passes, a long subject or a body without a blank line fails naming its commit.
set -euo pipefail

CHECK="$(cd "$(dirname "$0")" && pwd)/commit-messages.sh"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# A repository whose base commit is followed by commits with the given messages.
repo() {
  local dir="$WORK/$1"; shift
  git init -q "$dir"
  git -C "$dir" -c user.name=ci -c user.email=ci@example.invalid commit -q --allow-empty \
    -m "A base commit whose subject is far longer than seventy-two characters, before the rule"
  for message in "$@"; do
    git -C "$dir" -c user.name=ci -c user.email=ci@example.invalid commit -q --allow-empty --cleanup=verbatim \
      -m "$message"
  done
  echo "$dir"
}

# Runs the check in `dir` against its first commit; prints its output, returns its status.
check() {
  local dir="$1"
  (cd "$dir" && "$CHECK" "$(git rev-list --max-parents=0 HEAD)") 2>&1
}

fail() { echo "commit-messages-test: $*" >&2; exit 1; }

seventy_two="$(printf 'x%.0s' $(seq 1 72))"

good="$(repo good "Subject only" "$seventy_two" "$(printf 'Subject ≤ 72 characters, counted as characters\n\nThe body says why.')")"
out="$(check "$good")" || fail "a good history was refused: $out"

long="$(repo long "Fine" "${seventy_two}y")"
if out="$(check "$long")"; then fail "a 73-character subject passed"; fi
short="$(git -C "$long" rev-parse --short HEAD)"
[[ "$out" == *"commit $short"*"73 characters"* ]] || fail "the long subject's commit is not named: $out"

glued="$(repo glued "$(printf 'Subject\nbody right under it')")"
if out="$(check "$glued")"; then fail "a body without a blank line passed"; fi
short="$(git -C "$glued" rev-parse --short HEAD)"
[[ "$out" == *"commit $short"*"blank line"* ]] || fail "the glued body's commit is not named: $out"

echo "commit-messages-test: passed"
