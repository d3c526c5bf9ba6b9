#!/usr/bin/env bash
# Set up (packages), build from this tree in ./build, run `make check`, and print
# the closing line "N passed, N failed[, N skipped]" counted from the test results.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
tools/install-deps.sh || { echo "run-tests: installing packages failed"; echo "0 passed, 1 failed"; exit 1; }
./autogen.sh >/dev/null 2>&1 || { echo "run-tests: autogen failed"; echo "0 passed, 1 failed"; exit 1; }
mkdir -p build
cd build
if ! { ../configure -q --enable-werror && make -j"$(nproc)" >make.out 2>&1; }; then
	tail -50 make.out 2>/dev/null
	echo "run-tests: build failed"
	echo "0 passed, 1 failed"
	exit 1
fi
rm -f test-suite.log
find . -name '*.trs' -delete
make -j"$(nproc)" check "$@" >check.out 2>&1
status=$?
grep -E '^(PASS|FAIL|SKIP|XFAIL|XPASS|ERROR):' check.out
if [ $status -ne 0 ] && [ -f test-suite.log ]; then
	echo "---- failures (test-suite.log) ----"
	sed -n '1,400p' test-suite.log
fi
passed=0 failed=0 skipped=0
while IFS= read -r res; do
	case "$res" in
	PASS|XFAIL) passed=$((passed + 1)) ;;
	SKIP) skipped=$((skipped + 1)) ;;
	*) failed=$((failed + 1)) ;;
	esac
done < <(find . -name '*.trs' -exec sed -n 's/^:test-result: //p' {} +)
if [ $((passed + failed + skipped)) -eq 0 ]; then
	tail -30 check.out
	failed=1
fi
if [ $status -ne 0 ] && [ $failed -eq 0 ]; then
	tail -30 check.out
	failed=1
fi
line="$passed passed, $failed failed"
[ $skipped -gt 0 ] && line="$line, $skipped skipped"
echo "$line"
[ $failed -eq 0 ]
