#!/usr/bin/env bash
# Checks the messages of the commits after BASE up to HEAD: a subject of at
# most 72 characters and, when there is a body, a blank line between the two.
# Fails naming every commit that breaks the rule.
#
#   .ci/commit-messages.sh [BASE]
#
# Why a fixed BASE: the rule starts with issue 15 (code health); the commits
# before it are history and are not rewritten. BASE is the parent of that
# issue's first commit (5390cf6, "bench/README: name the right result file
# for the last run").
set -euo pipefail

BASE="${1:-5390cf63a876b14b7eaf3d02f3f55c27656cf10b}"
MAX_SUBJECT=72
# Commits that landed before their branch had this check, kept rather than rewriting merged history.
EXEMPT="976f9091"   # "kit::db::DatabaseConfig: one database preamble for auth, projects, threads" (74)
# Characters, not bytes: a subject with an "é" or a "≤" is not longer for it.
export LC_ALL=C.UTF-8

if ! git cat-file -e "$BASE^{commit}" 2>/dev/null; then
  # A clone without the history (shallow, or files without .git) has nothing to check against:
  # say so loudly rather than fail every later step for a missing commit.
  echo "commit messages: NOT CHECKED: the base commit $BASE is not in this clone (a shallow clone?)" >&2
  exit 0
fi
if ! git merge-base --is-ancestor "$BASE" HEAD; then
  echo "commit messages: the base commit $BASE is not an ancestor of HEAD" >&2
  exit 1
fi

failed=0
for commit in $(git rev-list --reverse "$BASE..HEAD"); do
  message="$(git show -s --format=%B "$commit")"
  subject="$(printf '%s\n' "$message" | sed -n 1p)"
  second="$(printf '%s\n' "$message" | sed -n 2p)"
  lines="$(printf '%s\n' "$message" | wc -l)"
  name="$(git rev-parse --short "$commit") \"$subject\""
  case " $EXEMPT " in *" ${commit:0:8} "*) continue ;; esac
  if [ "${#subject}" -gt "$MAX_SUBJECT" ]; then
    echo "commit $name: the subject is ${#subject} characters; at most $MAX_SUBJECT" >&2
    failed=1
  fi
  if [ "$lines" -gt 1 ] && [ -n "$second" ]; then
    echo "commit $name: the subject must be followed by a blank line before the body" >&2
    failed=1
  fi
done
if [ "$failed" -ne 0 ]; then
  echo "commit messages: reword the commits named above (git rebase -i, reword)" >&2
  exit 1
fi
echo "commit messages: $(git rev-list --count "$BASE..HEAD") commits after ${BASE:0:7} checked"
