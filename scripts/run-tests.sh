#!/usr/bin/env bash
# Set up (Debian packages), build, and run every test; print the closing line
# "N passed, N failed[, N skipped]" counted from the real results.
#
# Phases (IMGCHAIN_TEST_PHASES, default "check asan valgrind fuzz tsan"):
#   check     ./build: -Werror build, `make check` (unit, command, mount, boot, consolidate tests)
#   asan      ./build-asan: ASan+UBSan build, `make check` of the unit, command and adversarial tests
#   valgrind  ./build: `make check-valgrind` (memcheck on the unit tests, and on every tool run by
#             the command tests; see Makefile.am)
#   fuzz      ./build-fuzz: each libFuzzer target for FUZZ_SECONDS (default 60)
#   tsan      ./build-tsan: ThreadSanitizer build, the mount's concurrent, read and hand-over tests
#             (a report by the daemon or any tool fails the test; ASLR off for the run,
#             as TSan cannot map its shadow under some kernels' randomisation)
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
phases=${IMGCHAIN_TEST_PHASES:-check asan valgrind fuzz tsan}
passed=0 failed=0 skipped=0

die() { echo "run-tests: $*"; echo "$passed passed, $((failed + 1)) failed"; exit 1; }

scripts/install-deps.sh || die "installing packages failed"
./autogen.sh >/dev/null 2>&1 || die "autogen failed"

# count_trs DIR LABEL: add the results of DIR's .trs files to the totals
count_trs()
{
	local res f
	while IFS= read -r f; do
		res=$(sed -n 's/^:test-result: //p' "$1/$f")
		case "$res" in
		PASS|XFAIL) passed=$((passed + 1)) ;;
		SKIP) skipped=$((skipped + 1)); echo "SKIP ($2): ${f#./}" ;;
		*) failed=$((failed + 1)); echo "FAIL ($2): ${f#./}" ;;
		esac
	done < <(cd "$1" && find . -name '*.trs' | sort)
}

# build DIR CONFIGURE_ARGS...
build()
{
	local d=$1; shift
	mkdir -p "$d"
	(cd "$d" && { [ -f Makefile ] || ../configure -q "$@" >/dev/null; } &&
		make -j"$(nproc)" >make.out 2>&1) || { tail -40 "$d/make.out" 2>/dev/null; return 1; }
}

# run_check DIR LABEL MAKE_ARGS...
run_check()
{
	local d=$1 label=$2; shift 2
	find "$d" -name '*.trs' -delete
	rm -f "$d/test-suite.log"
	(cd "$d" && make -j"$(nproc)" AM_COLOR_TESTS=no "$@" >check-$label.out 2>&1)
	local st=$?
	grep -E '^(PASS|FAIL|SKIP|XFAIL|XPASS|ERROR):' "$d/check-$label.out" | sed "s/^/[$label] /"
	if [ $st -ne 0 ] && [ -f "$d/test-suite.log" ]; then
		echo "---- $label failures ----"
		sed -n '1,300p' "$d/test-suite.log"
	fi
	local before=$((passed + failed + skipped)) fb=$failed
	count_trs "$d" "$label"
	if [ $((passed + failed + skipped)) -eq "$before" ]; then
		tail -30 "$d/check-$label.out"
		failed=$((failed + 1))
	elif [ $st -ne 0 ] && [ $failed -eq $fb ]; then
		tail -30 "$d/check-$label.out"
		failed=$((failed + 1))
	fi
}

for phase in $phases; do
	echo "== phase $phase ($(date -u +%H:%M:%S))"
	case $phase in
	check)
		build build --enable-werror || die "build failed"
		run_check build check check
		;;
	asan)
		build build-asan --enable-sanitizers || die "sanitizer build failed"
		tests=$(cd build-asan && make -s print-asan-tests 2>/dev/null)
		ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
			run_check build-asan asan check TESTS="$tests"
		;;
	valgrind)
		build build --enable-werror || die "build failed"
		run_check build valgrind check-valgrind
		;;
	tsan)
		build build-tsan --enable-tsan || die "tsan build failed"
		# TSan cannot map its shadow memory under some kernels' address randomisation:
		# run the tests (and the daemons they start) with it off where setarch may
		tsh=/bin/bash
		setarch "$(uname -m)" -R true 2>/dev/null && tsh="setarch $(uname -m) -R /bin/bash"
		TSAN_OPTIONS="halt_on_error=0 exitcode=66 second_deadlock_stack=1" \
			run_check build-tsan tsan check SH_LOG_COMPILER="$tsh" \
			TESTS='tests/mount/mount-concurrent.sh tests/mount/mount-read.sh tests/mount/release.sh'
		;;
	fuzz)
		out=$(FUZZ_SECONDS=${FUZZ_SECONDS:-60} scripts/fuzz.sh 2>&1)
		echo "$out" | tail -40
		p=$(echo "$out" | grep -c '^PASS: fuzz_')
		f=$(echo "$out" | grep -c '^FAIL: fuzz_')
		[ $((p + f)) -gt 0 ] || f=1
		passed=$((passed + p))
		failed=$((failed + f))
		;;
	*) die "unknown phase $phase" ;;
	esac
done
echo "== done ($(date -u +%H:%M:%S))"
line="$passed passed, $failed failed"
[ $skipped -gt 0 ] && line="$line, $skipped skipped"
echo "$line"
[ $failed -eq 0 ]
