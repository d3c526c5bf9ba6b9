#!/bin/bash
# cdp-age.sh: the journal's age cap, through the real filter.  keep-age=AGE removes, oldest
# first, every session (never the current one) whose last checkpoint is AGE old, when a new
# session starts: at a rotation (session-age=, which defaults to keep-age) and when nbdkit
# starts.  The checkpoints of the removed sessions are gone (exit 1), the newest restore
# exactly.  A bad duration refuses to start.
source "${top_srcdir:-.}/tests/lib/functions.sh"
source "$top_srcdir/tests/cdp/cdp-lib.sh"

size=$((4 * 1048576))
cdp_setup $size
age=6                   # seconds; the steps below sleep age + 2 (margins for a loaded machine)

sessions() { ls C/cdp | tr '\n' ' '; }

# ---- bad durations ---------------------------------------------------------------------------
for bad in keep-age=0 keep-age=5x keep-age=-3 session-age=h; do
	if nbdkit -U "$SOCK" -P "$TESTDIR/bad.pid" --filter="$FILTER" file disk chain=C \
		passphrase-file=pass "$bad" 2>bad.log; then
		sleep 1; kill_quiet "$(cat bad.pid 2>/dev/null)"; fail "nbdkit started with $bad"
	fi
	grep -q 'not a duration' bad.log || { cat bad.log >&2; fail "no message for $bad"; }
done
[[ ! -e C/cdp ]] || [[ -z $(ls C/cdp) ]] || fail "a refused start left a journal"

# ---- rotation by age, then the old sessions removed ------------------------------------------
cdp_start keep-age=${age}s
cdp_io flush; cdp_mark 0
cdp_io 'write -P 0x11 0 100000' flush; cdp_mark 1
[[ $(sessions) == "00000001.cdp " ]] || fail "one session expected: $(sessions)"
sleep $((age + 2))
# session 1 is age old: this flush ends it (its last checkpoint, now) and starts session 2;
# session 1 stays (its last checkpoint is new)
cdp_io 'write -P 0x22 200000 5000' flush; cdp_mark 2
[[ $(sessions) == "00000001.cdp 00000002.cdp " ]] || fail "after the first rotation: $(sessions)"
sleep $((age + 2))
# session 2 rotates into 3; session 1's last checkpoint is now age old: removed
cdp_io 'write -P 0x33 300000 5000' flush; cdp_mark 3
[[ $(sessions) == "00000002.cdp 00000003.cdp " ]] || fail "keep-age did not remove session 1: $(sessions)"
cdp_gone 0 1
cdp_check 2 3
cdp_stop

# ---- at start: a new nbdkit removes the sessions that aged while it was down ------------------
sleep $((age + 2))
cdp_start keep-age=${age}s
cdp_io 'write -P 0x44 400000 5000' flush; cdp_mark 4
[[ $(sessions) == "00000004.cdp " ]] || fail "keep-age at start: $(sessions)"
cdp_check 4
cdp_gone 3
cdp_stop

# ---- keep-sessions= and keep-age= together: the count cap still applies -----------------------
cdp_start keep-age=1d session-size=200K keep-sessions=2
for k in 5 6 7; do                      # 300 KB of random bytes: one new session each
	mkrandom_bytes "rnd.$k" 300000 "r$k"
	cdp_io "write -s rnd.$k $((k * 300000)) 300000" flush; cdp_mark $k
done
cdp_stop
[[ $(sessions) == "00000007.cdp 00000008.cdp " ]] || fail "keep-sessions with keep-age: $(sessions)"
cdp_check 7
