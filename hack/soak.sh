#!/usr/bin/env bash
# Runs integration test binaries again and again, each round on a freshly
# started control plane, to catch what fails only sometimes (a fresh API
# server, leftovers of earlier binaries, start-up races).
#
#   hack/soak.sh ROUNDS TEST [TEST ...]    e.g. hack/soak.sh 8 restart leader_election metrics
#
# Prints one line per round and keeps each round's output in
# target/soak/round-N.log; exits non-zero if any round failed.
set -euo pipefail

cd "$(dirname "$0")/.."
if [[ $# -lt 2 || ! $1 =~ ^[0-9]+$ ]]; then
  sed -n '6s/^# *//p' "$0" >&2
  exit 2
fi
rounds=$1
shift
tests=()
for name in "$@"; do
  tests+=(--test "$name")
done

mkdir -p target/soak
if ! cargo test --locked --no-run "${tests[@]}" >target/soak/build.log 2>&1; then
  cat target/soak/build.log >&2
  exit 1
fi
failed=0
for round in $(seq 1 "$rounds"); do
  dir=$(mktemp -d /tmp/tokensmith-soak.XXXXXX)
  rmdir "$dir"
  hack/control-plane.sh start "$dir" "$$" >"target/soak/control-plane-$round.log" 2>&1
  started=$(date +%s)
  if env -u KUBECONFIG TOKENSMITH_TEST_KUBECONFIG="$dir/kubeconfig" \
    cargo test --locked "${tests[@]}" >"target/soak/round-$round.log" 2>&1; then
    outcome=ok
  else
    outcome=FAILED
    failed=$((failed + 1))
  fi
  echo "round $round: $outcome in $(($(date +%s) - started)) s"
  hack/control-plane.sh stop "$dir" >/dev/null 2>&1
done
echo "$failed of $rounds rounds failed"
[[ $failed -eq 0 ]]
