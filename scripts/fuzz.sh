#!/usr/bin/env bash
# Build the libFuzzer targets (clang, ASan + UBSan) in build-fuzz/, make seed corpora
# from the golden chain files, and run each target for FUZZ_SECONDS (default 60).
# Fails if any target finds a crash, leak, sanitizer error or timeout; prints the
# executions of each target.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
secs=${FUZZ_SECONDS:-60}
cd "$top"
[ -x configure ] || ./autogen.sh >/dev/null 2>&1
mkdir -p build-fuzz && cd build-fuzz
if [ ! -f Makefile ]; then
	../configure -q CC=clang --enable-fuzzers >/dev/null || exit 1
fi
targets="fuzz_keyfile fuzz_header fuzz_record fuzz_changed fuzz_chain fuzz_vmdk fuzz_overlay fuzz_state
	fuzz_journal fuzz_vhdx fuzz_owner fuzz_promote"
make -j"$(nproc)" $targets >make.out 2>&1 || { tail -40 make.out; exit 1; }
python3 "$top/tests/fuzz/make_corpus.py" "$top/tests/golden/v1" "$top/tests/golden/v2" corpus || exit 1
fails=0
for t in $targets; do
	mkdir -p "corpus/$t" "artifacts/$t"
	log="fuzz-$t.log"
	./"$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=300000 \
		-artifact_prefix="artifacts/$t/" "corpus/$t" >"$log" 2>&1
	rc=$?
	execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
	[ -n "$execs" ] || execs=$(grep -Eo '#[0-9]+' "$log" | tail -1 | tr -d '#')
	if [ $rc -ne 0 ]; then
		echo "FAIL: $t (exit $rc, ${execs:-?} executions)"
		grep -E "ERROR|SUMMARY|==[0-9]+==|^$t: " "$log" | head -20
		fails=$((fails + 1))
	else
		echo "PASS: $t: ${execs:-?} executions in ${secs}s, corpus $(ls "corpus/$t" | wc -l) inputs"
	fi
done
[ $fails -eq 0 ]
