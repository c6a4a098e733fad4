#!/usr/bin/env bash
# Sets up and serves hashmatch on ./data with the benign demo list (see README).
# Extra arguments go to `hashmatch serve` and win over the defaults here, e.g.
#   scripts/demo.sh --listen 127.0.0.1:50052
set -euo pipefail
cd "$(dirname "$0")/.."
echo "hashmatch: setting up .venv and building the core (the first time takes a few minutes)…" >&2
scripts/setup.sh
exec .venv/bin/hashmatch serve --data-dir data --listen 127.0.0.1:50051 --demo "$@"
