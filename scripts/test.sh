#!/usr/bin/env bash
# The test command: installs what is needed, builds migrd twice (gcc, and clang with
# AddressSanitizer + UndefinedBehaviorSanitizer + libFuzzer) and runs every ctest test in both;
# with the gcc build, a release build (-O3) is compiled too.
#
#   sudo scripts/test.sh                 # everything, both builds
#   sudo scripts/test.sh -L unit         # extra arguments go to ctest (here: unit tests only)
#   MIGRD_BUILDS=gcc sudo scripts/test.sh  # only the gcc build
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
	echo "scripts/test.sh: the integration tests build network and mount namespaces: run as root" >&2
	exit 1
fi
scripts/install-deps.sh
getent group migrd >/dev/null || groupadd --system migrd

echo "=== style: clang-format (.clang-format, kernel-like, 100 columns)"
if ! git ls-files -z '*.c' '*.h' | xargs -0 clang-format --dry-run --Werror; then
	echo "scripts/test.sh: run clang-format -i on the files above" >&2
	exit 1
fi

builds=${MIGRD_BUILDS:-gcc asan}
jobs=$(nproc)
start=$(date +%s)
if [[ " $builds " == *" gcc "* ]]; then
	# What operators build: -O3 brings warnings (-Werror) that -O2 does not.
	echo "=== build: release (gcc -O3, build-release; compiled, not tested)"
	cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=gcc >/dev/null
	cmake --build build-release -j"$jobs"
fi
for b in $builds; do
	case $b in
	gcc)
		dir=build
		cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=gcc >/dev/null
		;;
	asan)
		dir=build-asan
		cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
			-DMIGRD_SANITIZE=ON -DMIGRD_FUZZ=ON >/dev/null
		;;
	*)
		echo "scripts/test.sh: unknown build '$b' (gcc, asan)" >&2
		exit 2
		;;
	esac
	echo "=== build: $b ($dir)"
	cmake --build "$dir" -j"$jobs"
	echo "=== tests: $b"
	# halt_on_error keeps a sanitizer report from scrolling past as a pass.
	ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1:abort_on_error=1} \
	UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
		ctest --test-dir "$dir" --output-on-failure --timeout 900 "$@"
done
echo "=== all test runs passed in $(($(date +%s) - start)) s"
