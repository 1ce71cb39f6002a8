#!/usr/bin/env bash
# Installs what the tests need and a fresh machine may lack. Idempotent and
# quick when everything is there already.
set -euo pipefail

need() { command -v "$1" >/dev/null 2>&1; }

for tool in go cargo python3 openssl curl setsid; do
  need "$tool" || { echo "error: $tool is required but not installed" >&2; exit 1; }
done

if need rustup; then
  for component in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$component" ||
      rustup component add "$component"
  done
fi
