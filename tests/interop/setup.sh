#!/usr/bin/env bash
# Installs what tests/interop.rs needs, exactly as pinned: PyJWT and cryptography in a virtual
# environment (tests/interop/.venv, from requirements.txt) and panva/jose (node_modules, from
# package-lock.json). Idempotent; tests/run.sh calls it. openssl, python3 and node come from the
# machine (Debian's openssl package is installed if missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends openssl; }
for tool in python3 node npm; do
  command -v "$tool" >/dev/null || { echo "interop tests need $tool" >&2; exit 1; }
done

# Reinstall only when the pins changed since the last install.
if ! cmp -s requirements.txt .venv/installed-requirements.txt 2>/dev/null; then
  rm -rf .venv
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
  cp requirements.txt .venv/installed-requirements.txt
fi
if ! cmp -s package-lock.json node_modules/.installed-package-lock.json 2>/dev/null; then
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json node_modules/.installed-package-lock.json
fi
