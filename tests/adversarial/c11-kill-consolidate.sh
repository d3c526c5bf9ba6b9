#!/bin/bash
# c11-kill-consolidate.sh (doc/SECURITY.md case 11): kill -9 the consolidator at every named step of
# a merge (the test hook IMGCHAIN_TEST_CRASH_AT=STEP:N) and at random delays, for two range merges,
# a retention and two merges of one point (between them killed at one step of each kind: prepare,
# commit, rename, switch, done).  After each kill every point to be kept restores byte-identical;
# for the one-point merges the chain is also the old one or the new one (the merged point restores
# while it is there) and keyless imgverify passes.  A keyless rerun finishes the job, leaving no
# journal or temporary file, exactly the points to be kept, and a chain that passes imgverify
# --data.  (Was also tests/consolidate/crash.sh.)
source "${top_srcdir:-.}/tests/consolidate/cons-lib.sh"
requires_test_hooks
make_small_chain
cp -a "$CHAIN" "$TESTDIR/orig"

POINTS="prepare:1 copy:1 copy:3 written:1 commit:1 rename:1 renamed:1 switch:1 dup:1 moved:1
	delete:1 delete:2 deleted:1 punch:1 done:1 prepare:2 switch:2 delete:4"
runs=0

reset() { rm -rf "$CHAIN"; cp -a "$TESTDIR/orig" "$CHAIN"; }

# after_crash "ARGS" "KEPT" "FINAL" ["FIRST"]: the checks after an interrupted run; with FIRST
# (the first point a merge removes; a merge of one point: a chain that is old or new, keyless
# imgverify passes) the points are FINAL's and perhaps merged ones not removed yet, and FIRST,
# while the old chain is whole, restores
after_crash()
{
	local now p
	restore_points $2
	if [[ -n ${4:-} ]]; then
		imgverify -q "$CHAIN" || fail "$WHAT: keyless imgverify failed before the rerun"
		# the points kept are all there, and nothing but the old chain's points (the merged
		# ones may not be gone yet)
		now=$(point_names)
		for p in $3; do
			[[ " $now " == *" $p "* ]] ||
				fail "$WHAT: points '$now' are neither the old chain nor the new one"
		done
		for p in $now; do
			[[ " $ALL " == *" $p "* ]] ||
				fail "$WHAT: points '$now' are neither the old chain nor the new one"
		done
		[[ $now != "$ALL" ]] || restore_points "$4"
	fi
	keyless $1 "$CHAIN"
	if [[ $RC -ne 0 ]]; then
		# a --merge whose points are gone was finished by the recovery of this rerun
		[[ $RC -eq 1 ]] && grep -q "no such pair" "$TESTDIR/last.err" ||
			fail "$WHAT: rerun exited $RC: $LAST_ERR"
	fi
	[[ $(point_names) == "$3" ]] || fail "$WHAT: points after the rerun: $(point_names)"
	[[ ! -e $CHAIN/journal ]] || fail "$WHAT: journal left: $(cat "$CHAIN/journal")"
	no_tmp_files "$CHAIN"
	set -- $2
	restore_points "$1"
	imgverify -q --data "$CHAIN" || fail "$WHAT: imgverify --data failed after the rerun"
}

scenario()
{
	local args=$1 kept=$2 final=$3 first=${4:-} p
	REACHED=
	for p in ${STEPS:-$POINTS}; do
		reset
		IMGCHAIN_TEST_CRASH_AT=$p PATH=$HOOKS_PATH keyless $args "$CHAIN"
		if [[ $RC -eq 0 ]]; then
			continue    # this run does not reach that step
		fi
		[[ $RC -eq 137 ]] || fail "crash at $p: exit $RC: $LAST_ERR"
		WHAT="$args, killed at $p"
		REACHED="$REACHED $p"
		after_crash "$args" "$kept" "$final" "$first"
		runs=$((runs + 1))
	done
	# signals at random delays
	for p in 1 2 3; do
		reset
		WHAT="$args, SIGKILL after $((p * 20 - 10)) ms"
		mv "$CHAIN/imgchain.key" "$TESTDIR/key.away"
		env -u IMGCHAIN_PASSPHRASE imgconsolidate -q $args "$CHAIN" 2>/dev/null &
		sleep "0.0$((p * 2 - 1))"
		kill -9 $! 2>/dev/null || true
		{ wait $!; } 2>/dev/null || true
		mv "$TESTDIR/key.away" "$CHAIN/imgchain.key"
		after_crash "$args" "$kept" "$final" "$first"
		runs=$((runs + 1))
	done
}

# into the full, in place; br (a child of p05) becomes a synthetic full of its own
ALL=$(point_names)
scenario "--merge p00..p06" "br p06 p07 p08 p09 p10" "br p06 p07 p08 p09 p10"
# a middle range; br rebased onto p01
scenario "--merge p02..p07" "br p00 p01 p07 p08 p09 p10" "br p00 p01 p07 p08 p09 p10"
# retention in two steps: p05 (branch point) takes p00..p04 in place, p10 takes p06..p09
scenario "--keep-last 2" "br p05 p10" "br p05 p10"
# one point merged away, killed at one step of each kind between two merges (the full p00 into
# p01, rewritten in place; the branch point p05 into p06, br rebased): the chain is the old one or
# the new one, keyless imgverify passes before the rerun
reached=
for range in p00..p01 p05..p06; do
	kept=$(tr ' ' '\n' <<<"$ALL" | grep -vx "${range%..*}" | tr '\n' ' ')
	kept=${kept% }
	STEPS="prepare:1 commit:1 rename:1 switch:1 done:1" \
		scenario "--merge $range" "$kept" "$kept" "${range%..*}"
	reached="$reached$REACHED"
done
for p in prepare:1 commit:1 rename:1 switch:1 done:1; do
	[[ " $reached " == *" $p "* ]] || fail "no one-point merge was killed at $p (killed at:$reached)"
done

echo "$runs interrupted runs checked"
((runs >= 20)) || fail "only $runs interrupted runs"
