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

# A virtualenv with the Python clients the tests use (PyJWT, Authlib),
# rebuilt when hack/python-requirements.txt changes.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${TOKENSMITH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tokensmith}/python"
stamp="$venv/.requirements"
if ! cmp -s "$here/python-requirements.txt" "$stamp" 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/python-requirements.txt"
  cp "$here/python-requirements.txt" "$stamp"
  echo "python clients installed in $venv" >&2
fi
