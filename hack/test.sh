#!/usr/bin/env bash
# The project's test command (README: `make test`; CI runs exactly this).
# Builds or reuses the control-plane binaries, starts one control plane for
# every test binary, runs the lints and the whole test suite, and stops the
# control plane again, also when a step fails. Then runs the demo.
#
# TOKENSMITH_TEST_KUBECONFIG=path/to/kubeconfig runs the suite against that
# cluster instead of starting one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "toolchain"
hack/install-tools.sh

step "lint: cargo fmt --check, cargo clippy -D warnings"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo clippy --test faults --test scale --locked -- -D warnings
cargo clippy --bin tokensmith --features heap-profile --locked -- -D warnings

if [ -z "${TOKENSMITH_TEST_KUBECONFIG:-}" ]; then
  step "control plane"
  hack/control-plane.sh build >/dev/null
  cp_dir="$PWD/target/control-plane-test"
  # Stops it whatever happens below; the PID makes it stop itself too should
  # this script be killed outright.
  trap 'hack/control-plane.sh stop "$cp_dir"' EXIT
  eval "$(hack/control-plane.sh start "$cp_dir" $$)"
fi

step "cargo test"
cargo test --all-targets --locked
# The fault suite and the scale figures run on demand (make faults, make
# scale); built here so they cannot rot.
cargo test --locked --test faults --test scale --no-run

# The README's demo is part of the product: it must keep working.
step "demo (hack/demo.sh)"
hack/demo.sh >target/demo.log 2>&1 || { cat target/demo.log; exit 1; }
echo "the demo ran start to finish (output in target/demo.log)" >&2
