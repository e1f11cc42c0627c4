#!/usr/bin/env bash
# The README's main command: installs the Debian packages, builds into ./build, then runs a
# 3-host migrd cluster on this machine (tests/integration/demo.py) and removes it again.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "demo.sh: run as root: it installs packages and builds network and mount namespaces" >&2
  exit 1
fi

scripts/install-deps.sh
if [ ! -f build/CMakeCache.txt ]; then
  cmake -S . -B build
fi
cmake --build build -j2

# Debian's interpreter: the one python3-pytest and the harness's tests are installed for.
exec /usr/bin/python3 tests/integration/demo.py --build-dir build "$@"
