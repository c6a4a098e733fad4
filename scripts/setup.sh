#!/usr/bin/env bash
# Creates .venv (if missing) and installs both distributions in editable mode, which
# builds the Rust core (hashcore) with maturin. Safe to re-run: it only rebuilds.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
fi
# The client first: the server distribution depends on it for the generated stubs.
.venv/bin/pip install --quiet -e "./clients[pdq,video]"
.venv/bin/pip install --quiet -e ".[dev]"
# The multi-host test (tests/test_multihost.py) puts Debian's HAProxy in front of replicas in
# network namespaces. As root it is installed when missing; elsewhere the test is skipped
# and says why.
if ! command -v haproxy >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null; } \
    || echo "setup: could not install haproxy; the multi-host test will be skipped" >&2
fi
