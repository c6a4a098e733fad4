#!/usr/bin/env bash
# Sets up and serves hashmatch on ./data with the benign demo list (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/hashmatch serve --data-dir data --listen 127.0.0.1:50051 --demo "$@"
