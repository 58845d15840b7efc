#!/usr/bin/env bash
# Set up (or reuse) the venv and run the whole test suite. Extra arguments go to pytest.
# Slow tests (training, soak) run a short version unless SGDFUSE_SLOW=1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/env.sh
exec "${SGDFUSE_VENV:-.venv}/bin/python" -m pytest -q "$@"
