#!/bin/bash
# cdp-restore.sh: writes, zeroes, trims and FUA writes through the imgcdp nbdkit filter in
# front of nbdkit's file plugin, flushes at recorded times: `imgrestore --at` every flush's
# time gives the disk as it was at that flush, byte for byte (the short last block too).
# SIGKILL of nbdkit during writes: every flush acknowledged before it still restores exactly;
# the next nbdkit starts a new session.  A torn journal tail is ignored, never served.
source "${top_srcdir:-.}/tests/lib/functions.sh"
source "$top_srcdir/tests/cdp/cdp-lib.sh"

size=$((8 * 1048576 + 12345))
cdp_setup $size
cdp_start

# ---- checkpoints at known times ------------------------------------------------------------
cdp_io flush; cdp_mark 0                                  # the capture: the disk as it was
cdp_io 'write -P 0x11 100 5000' flush; cdp_mark 1        # inside block 0
cdp_io 'write -P 0x22 65000 200000' flush; cdp_mark 2    # across blocks 0..4, unaligned
cdp_io 'write -z 131072 196608' 'discard 0 65536' flush; cdp_mark 3   # zero and trim
cdp_io "write -P 0x33 $((size - 20000)) 20000" flush; cdp_mark 4      # the short last block
cdp_io 'write -f -P 0x44 4194304 65536'; cdp_mark 5       # FUA, no flush
cdp_io 'write -P 0x55 1000000 3000000' 'write -P 0x66 1500000 4096' flush; cdp_mark 6
for k in 0 1 2 3 4 5 6; do
	expect_exit 0 imgrestore -P pass --at "${T[$k]}" C "r.$k"
	cmp "r.$k" "snap.$k" || fail "checkpoint $k: the restored disk differs"
	rm -f "r.$k"
done
# consecutive states really differ (the test would catch a restore of the wrong one)
! cmp -s snap.1 snap.2 && ! cmp -s snap.3 snap.4 || fail "the test's writes changed nothing"
expect_exit 0 imgrestore -P pass --at "$(date -u -d "@${T[2]}" +%Y-%m-%dT%H:%M:%S.%NZ)" C r.iso
cmp r.iso snap.2 || fail "--at in UTC ISO form differs"
expect_exit 1 imgrestore -P pass --at 1000000000 C r.none
expect_msg "no checkpoint at or before 2001-09-09T01:46:40"
[[ ! -e r.none ]] || fail "a failed restore left DEST"
cp snap.0 r.exists
expect_exit 1 imgrestore -P pass --at "${T[1]}" C r.exists
expect_msg "r.exists: exists"
cmp r.exists snap.0 || fail "an existing DEST was changed"
expect_exit 2 imgrestore -P pass --at yesterday C r.none
expect_exit 2 imgrestore -P pass --at 1000000000 C

# ---- SIGKILL during writes -------------------------------------------------------------------
cdp_io 'write -P 0x77 2000000 70000' flush; cdp_mark 7
cmds=()
for i in $(seq 0 1999); do
	cmds+=(-c "write -P $((i % 200 + 1)) $((i * 40000 % 8000000)) 65536")
	((i % 10)) || cmds+=(-c flush)
done
: >kill-io.log
qemu-io -t writeback -f raw "$URI" "${cmds[@]}" >kill-io.log 2>&1 &
io=$!
for _ in $(seq 600); do          # kill once 30 writes went through (60 s at most)
	n=$(grep -c '^wrote' kill-io.log || true)
	((n < 30)) || break
	sleep 0.1
done
kill -KILL "$NBDKIT_PID"
wait "$io" || true
grep -q '^wrote' kill-io.log || fail "no write went through before the kill"
grep -q -v '^wrote\|^[0-9]' kill-io.log || fail "every write went through before the kill: kill earlier" 
NBDKIT_PID=
expect_exit 0 imgrestore -P pass --at "${T[7]}" C r.7
cmp r.7 snap.7 || fail "the flush acknowledged before SIGKILL is not restorable exactly"
expect_exit 0 imgrestore -P pass --at "$(date +%s.%N)" C r.after   # whatever came after: sound
rm -f r.7 r.after

# ---- a torn tail: a cut journal, junk after it ------------------------------------------------
j=$(cdp_journal)
jsize=$(stat -c %s "$j")
truncate -s $((jsize - 50)) "$j"
head -c 3000 /dev/urandom >>"$j"
for k in 6 7; do
	expect_exit 0 imgrestore -P pass --at "${T[$k]}" C "r.$k"
	cmp "r.$k" "snap.$k" || fail "checkpoint $k after a torn tail: differs"
	rm -f "r.$k"
done

# ---- a new session after the kill: the disk as it now is, then new checkpoints ---------------
cp --sparse=always disk snap.8base
cdp_start
cdp_io 'write -P 0x88 300 100' flush; cdp_mark 8
[[ $(ls C/cdp | wc -l) -eq 2 ]] || fail "expected a second journal session: $(ls C/cdp)"
expect_exit 0 imgrestore -P pass --at "${T[8]}" C r.8
cmp r.8 snap.8 || fail "checkpoint of the second session differs"
expect_exit 0 imgrestore -P pass --at "${T[6]}" C r.6
cmp r.6 snap.6 || fail "the first session's checkpoint after a second session: differs"
cdp_stop
no_tmp_files .
