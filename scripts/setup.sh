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
.venv/bin/pip install --quiet -e "./clients[pdq]"
.venv/bin/pip install --quiet -e ".[dev]"
