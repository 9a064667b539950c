# Sourced by scripts/run.sh and scripts/test.sh: make .venv and install requirements, idempotently.
# Creates .venv with python3.11 if missing; reinstalls only when requirements*.txt changed
# (sha256 stamp in .venv/.requirements.sha256). Override the interpreter with PYTHON=...
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3.11}"
if [ -x .venv/bin/python ] && ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    echo "== .venv has no pip (an interrupted set-up?): making it again"
    rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
    command -v "$PYTHON" >/dev/null || { echo "error: $PYTHON not found (Python 3.11 is required)" >&2; exit 1; }
    echo "== creating .venv with $PYTHON"
    "$PYTHON" -m venv .venv
fi

stamp=.venv/.requirements.sha256
want="$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "== installing requirements-dev.txt into .venv"
    .venv/bin/python -m pip install --disable-pip-version-check -q -r requirements-dev.txt
    echo "$want" > "$stamp"
fi
