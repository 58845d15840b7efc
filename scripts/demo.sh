#!/usr/bin/env bash
# Set up (or reuse) the venv and run the demo on the bundled sample pairs.
# Extra arguments go to `sgdfuse demo` (see `sgdfuse demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/env.sh
exec "${SGDFUSE_VENV:-.venv}/bin/sgdfuse" demo "$@"
