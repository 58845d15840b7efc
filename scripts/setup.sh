#!/usr/bin/env bash
# Create (or reuse) the local virtual environment and install sgdfuse_ros with everything the
# demo and the tests need. Safe to run again: it only reinstalls when setup.py or the pins change.
#
#   SGDFUSE_VENV   venv folder (default: .venv in the repository)
#   PYTHON         interpreter for a new venv (default: python3; 3.10 or newer)
#   SGDFUSE_EXTRAS pip extras to install (default: every one the tests and the demo use:
#                  ros,onnx,torch,sam,test,cluster; SGDFUSE_EXTRAS=runtime,test is the
#                  PyTorch-free vehicle install, see README "Deploying on a vehicle")
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${SGDFUSE_VENV:-.venv}
PY=${PYTHON:-python3}
EXTRAS=${SGDFUSE_EXTRAS:-ros,onnx,torch,sam,test,cluster}

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "setup: need Python 3.10 or newer as '$PY' (set PYTHON=...)" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV" >&2
  "$PY" -m venv "$VENV" || {
    echo "setup: 'python3 -m venv' failed; on Debian/Ubuntu: sudo apt-get install python3-venv" >&2
    exit 1
  }
fi

stamp="$VENV/.sgdfuse-installed"
want=$(cat setup.py constraints.txt | sha256sum | cut -c1-16)-$EXTRAS
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "setup: installing sgdfuse_ros[$EXTRAS] into $VENV (first run takes a few minutes)" >&2
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[$EXTRAS]"
echo "$want" > "$stamp"
