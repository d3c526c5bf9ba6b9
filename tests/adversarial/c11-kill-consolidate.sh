#!/bin/bash
# c11-kill-consolidate.sh (CRYPTO.md case 11): imgconsolidate --merge p1..p2 (p3, a branch off
# p1, becomes a synthetic full) killed with SIGKILL at each named step of its protocol (test hook
# IMGCHAIN_TEST_CRASH_AT, one step of each kind; the long sweep is tests/consolidate/crash.sh).
# After each kill: the chain is the old one or the new one (p1 may or may not be gone yet), every
# point present restores byte-exact and keyless imgverify passes; a keyless rerun finishes the
# job, removes the journal and every temporary file, and leaves exactly p2 and p3.
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
requires imgconsolidate
requires_test_hooks
make_chain

points() { imginfo --json C >pts.json && json_get pts.json '" ".join(sorted(p["name"] for p in j["points"]))'; }

# keyless ARGS...: imgconsolidate with the key file out of reach and no passphrase
keyless()
{
	mv C/imgchain.key key.away
	chmod 000 key.away
	set +e
	{ env -u IMGCHAIN_PASSPHRASE imgconsolidate -q "$@" >last.out 2>last.err; } 2>/dev/null
	LAST_RC=$?
	set -e
	chmod 600 key.away
	mv key.away C/imgchain.key
}

killed=0
for step in prepare commit rename switch done; do
	fresh
	IMGCHAIN_TEST_CRASH_AT=$step PATH=$HOOKS_PATH keyless --merge p1..p2 C
	if ((LAST_RC == 0)); then
		# this merge does not pass that step
		[[ $(points) == "p2 p3" ]] || fail "not killed at $step, but points are $(points)"
		continue
	fi
	[[ $LAST_RC -eq 137 ]] || fail "killed at $step: exit $LAST_RC: $(cat last.err)"
	killed=$((killed + 1))
	now=$(points)
	case $now in
	"p1 p2 p3") restore_cmp C p1 s1 ;;
	"p2 p3") ;;
	*) fail "killed at $step: points '$now' are neither the old chain nor the new one" ;;
	esac
	restore_cmp C p2 s2
	restore_cmp C p3 s3
	expect_exit 0 imgverify -q C
	# the rerun recovers (finishing or rolling back the journal) and completes the merge
	keyless --merge p1..p2 C
	if ((LAST_RC != 0)); then
		# the recovery already finished this very merge: nothing is left to merge
		[[ $LAST_RC -eq 1 ]] && grep -q "no such pair" last.err ||
			fail "killed at $step: the rerun exited $LAST_RC: $(cat last.err)"
	fi
	[[ ! -e C/journal ]] || fail "killed at $step: journal left after the rerun"
	no_tmp_files C
	[[ $(points) == "p2 p3" ]] || fail "killed at $step: points after the rerun: $(points)"
	# the seals pin every block of p2 and p3: verifying them with the key proves their content
	expect_exit 0 imgverify -q --data C
done
restore_cmp C p2 s2
restore_cmp C p3 s3
echo "$killed kills checked"
((killed >= 5)) || fail "only $killed steps were reached"
