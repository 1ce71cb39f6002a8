#!/usr/bin/env bash
# The benchmarks (`make bench`; README: Testing), release build: the token
# service's lookups and signing per algorithm (tests/benches/token_service.rs),
# then tests/scale.rs on a control plane of its own: memory and API requests
# per token, throughput against a raw client making the same requests, cold
# start, a rotation storm, and the token service under load. Writes every
# figure, the machine and the command into BENCHMARKS.md between the
# "figures" markers (the prose around them is kept).
# TOKENSMITH_SCALE_STEPS=1000,10000 sets the AccessToken counts.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

hack/install-tools.sh
hack/control-plane.sh build >/dev/null
steps="${TOKENSMITH_SCALE_STEPS:-1000,10000}"
rm -rf target/scale
mkdir -p target/scale
started=$SECONDS
cargo bench --locked --bench token_service | tee target/scale/token-service.txt
# The operator logs as the chart's default has it (info), not at the tests' debug.
env -u TOKENSMITH_TEST_KUBECONFIG TOKENSMITH_SCALE_STEPS="$steps" TOKENSMITH_TEST_LOG_LEVEL=info \
  cargo test --locked --release --test scale -- --nocapture
seconds=$((SECONDS - started))

python3 - "$steps" "$seconds" <<'PY'
import datetime, os, re, sys
steps, seconds = sys.argv[1], sys.argv[2]
mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "0")
generated = "\n".join([
    "<!-- figures: written by hack/bench.sh -->",
    f"Machine: {os.cpu_count()} cores, {int(mem) // 1048576} GiB; "
    f"{datetime.date.today()}; `TOKENSMITH_SCALE_STEPS={steps} make bench` "
    f"({seconds} s, the release build of the operator).",
    "",
    open("target/scale/figures.md").read().strip(),
    "",
    "The token service's lookups with many objects in its index (a token",
    "judged again, remembered; and each token once, its signature checked), and",
    "signing per algorithm: `sign_jwt` with the key parsed once, jsonwebtoken's",
    "`sign` (which parses the key for every signature) and the bare aws-lc-rs",
    "signature (`cargo bench --bench token_service`):",
    "",
    "```",
    open("target/scale/token-service.txt").read().strip(),
    "```",
    "<!-- end of figures -->",
])
text = open("BENCHMARKS.md").read() if os.path.exists("BENCHMARKS.md") else "# Benchmarks\n\n"
marked = re.compile(r"<!-- figures: .*?<!-- end of figures -->", re.S)
text = marked.sub(lambda _: generated, text) if marked.search(text) else text.rstrip() + "\n\n" + generated + "\n"
open("BENCHMARKS.md", "w").write(text)
print("BENCHMARKS.md written")
PY
