#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite. Extra args go to pytest, e.g. ./scripts/test.sh -m "not browser"
set -euo pipefail
source "$(dirname "$0")/setup_env.sh"

export GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1
CHROMIUM="${DL_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
    echo "== installing Debian's chromium (browser tests)"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
fi

exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
