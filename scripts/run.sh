#!/usr/bin/env bash
# Set up (idempotent) and launch Diffusion Lab. Flags go to app.py, e.g. ./scripts/run.sh --port 7861
set -euo pipefail
source "$(dirname "$0")/setup_env.sh"
exec .venv/bin/python app.py "$@"
