#!/usr/bin/env bash
# The fault suite (`make faults`; README: Reliability). Runs tests/faults.rs
# TOKENSMITH_FAULT_RUNS times in a row (default 2), each run on a fresh
# control plane of its own, and writes every run's table, the machine and
# the command to RELIABILITY.md. Fails if any scenario failed.
# TOKENSMITH_FAULT_SEED=N repeats a run's random choices.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

hack/install-tools.sh
hack/control-plane.sh build >/dev/null
runs="${TOKENSMITH_FAULT_RUNS:-2}"
rm -rf target/faults
mkdir -p target/faults
# Built once: every run tests the same binaries.
suite="$(cargo test --locked --test faults --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "faults" and m.get("executable"):
        print(m["executable"])')"
[ -x "$suite" ] || { echo "the fault suite did not build" >&2; exit 1; }
failed=0
for run in $(seq "$runs"); do
  printf '\n==> fault suite, run %s of %s\n' "$run" "$runs" >&2
  : >target/faults/rows.tsv
  started=$SECONDS
  # The suite starts its own control plane: never the shared one.
  if ! env -u TOKENSMITH_TEST_KUBECONFIG "$suite" --test-threads=1 --nocapture \
    >"target/faults/run-$run.log" 2>&1; then
    failed=1
    grep -E '^test .*FAILED|panicked' "target/faults/run-$run.log" >&2 || true
  fi
  mv target/faults/rows.tsv "target/faults/rows-$run.tsv"
  echo "$((SECONDS - started))" >"target/faults/seconds-$run"
  grep -oE 'seed [0-9]+' "target/faults/run-$run.log" | head -1 >"target/faults/seed-$run" || true
done

python3 - "$runs" <<'PY'
import os, platform, sys, datetime
runs = int(sys.argv[1])
mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "0")
lines = [
    "# Reliability",
    "",
    "What `make faults` (`hack/faults.sh`, scenarios in `tests/faults.rs`) measured",
    "on the last run: each scenario breaks something on a local control plane",
    "(etcd, kube-apiserver, kube-controller-manager built by",
    "`hack/control-plane.sh`) and checks what was lost or duplicated. The",
    "operator is the debug build the tests use.",
    "",
    f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
    f"- machine: {os.cpu_count()} cores, {int(mem) // 1024 // 1024} GiB, {platform.system()} {platform.release()}",
    "- command: `make faults` (runs the suite twice in a row)",
    "",
]
for run in range(1, runs + 1):
    seed = open(f"target/faults/seed-{run}").read().strip() if os.path.exists(f"target/faults/seed-{run}") else ""
    seconds = open(f"target/faults/seconds-{run}").read().strip()
    lines += [f"## Run {run} ({seconds} s; {seed})", "",
              "| scenario | load and faults | figures | lost | duplicated | verdict |",
              "| --- | --- | --- | --- | --- | --- |"]
    for row in open(f"target/faults/rows-{run}.tsv"):
        cells = row.rstrip("\n").split("\t")
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines.append("")
open("RELIABILITY.md", "w").write("\n".join(lines))
PY
echo "RELIABILITY.md written" >&2
exit "$failed"
