#!/bin/bash
# lock.sh: one consolidation at a time (a second refuses; a killed one leaves no stuck
# lock); a point served with a writable overlay is kept and rewritten, and a holder that
# does not re-base fails the run after a bounded wait, naming the process; a reader of
# the full delays the hole punching to a later run.
source "${top_srcdir:-.}/tests/consolidate/cons-lib.sh"
requires_test_hooks
make_small_chain

# hold_range FILE BYTE: a process holding a POSIX read lock on one byte of FILE, as
# imgmount does (byte 0: reader, byte 1: writable overlay).  Sets HOLDER.
hold_range()
{
	: >"$TESTDIR/holder.out"    # not the previous holder's "held"
	python3 -c '
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, int(sys.argv[2]))
print("held", flush=True)
time.sleep(120)' "$1" "$2" >"$TESTDIR/holder.out" &
	HOLDER=$!
	cleanup_fn kill_quiet "$HOLDER"
	for _ in $(seq 100); do
		grep -q held "$TESTDIR/holder.out" && return 0
		sleep 0.1
	done
	fail "lock holder did not start"
}

# 1. a second consolidation while one runs is refused; the first, killed, leaves no lock
mv "$CHAIN/imgchain.key" "$TESTDIR/key.away"
IMGCHAIN_TEST_STALL_AT=written PATH=$HOOKS_PATH env -u IMGCHAIN_PASSPHRASE \
	imgconsolidate -q --merge p01..p03 "$CHAIN" 2>"$TESTDIR/stall.err" &
first=$!
for _ in $(seq 100); do
	grep -q "stalled at written" "$TESTDIR/stall.err" && break
	sleep 0.1
done
grep -q "stalled at written" "$TESTDIR/stall.err" || fail "first consolidation did not stall"
mv "$TESTDIR/key.away" "$CHAIN/imgchain.key"
keyless_expect 1 --merge p04..p05 "$CHAIN"
expect_msg "locked by another writer \(pid $first"
expect_exit 1 imgbackup -q "$CHAIN" "$SRC/p10"
kill -9 "$first"
{ wait "$first"; } 2>/dev/null || true
keyless_expect 0 --merge p01..p03 "$CHAIN"
[[ $(point_names) == "br p00 p03 p04 p05 p06 p07 p08 p09 p10" ]] || fail "points: $(point_names)"

# 2. a writable overlay on p05 (a point to merge away) held by a process that is no
#    server: p05 is kept and rewritten (p04 merged into it), the run waits the bound for
#    a re-base that never comes and fails naming the process; the chain is whole
hold_range "$CHAIN/$(point_field p05 file)" 1
keyless_expect 1 --merge p04..p06 --rebase-wait 1 "$CHAIN"
expect_msg "restore point 'p05' is served with a writable overlay by .*python3.*\(pid $HOLDER\): kept"
expect_msg "restore point 'p05' was merged, but .*python3.*\(pid $HOLDER\), which serves it with a writable overlay, did not re-base onto its new image within 1 s"
[[ $(point_names) == "br p00 p03 p05 p06 p07 p08 p09 p10" ]] || fail "points: $(point_names)"
grep -q '^stale ' "$CHAIN/rebase" || fail "the unanswered point is not kept in CHAIN/rebase"
check_points br p05 p06
# until a server locks p05's new image (or the file is removed), p05 is kept
keyless_expect 0 --merge p05..p06 "$CHAIN"
expect_msg "restore point 'p05' is kept: a server that did not re-base onto it"
[[ $(point_names) == "br p00 p03 p05 p06 p07 p08 p09 p10" ]] || fail "points: $(point_names)"
rm "$CHAIN/rebase"
# the overlay's point may stay while others merge
keyless_expect 0 --merge p06..p07 "$CHAIN"
kill "$HOLDER"
wait "$HOLDER" 2>/dev/null || true

# 3. a reader of the full: the merge into it completes, the punching waits
hold_range "$CHAIN/$(point_field p00 file)" 0
keyless_expect 0 --merge p00..p03 "$CHAIN"
expect_out "in use by a reader"
grep -q '^punch ' "$CHAIN/journal" || fail "no pending punch in the journal"
check_points br p03 p05 p07 p08 p09 p10
kill "$HOLDER"
wait "$HOLDER" 2>/dev/null || true
a0=$(alloc_kib)
keyless_expect 0 --keep-last 1000 "$CHAIN"
a1=$(alloc_kib)
((a1 < a0)) || fail "the deferred punching freed nothing ($a0 KiB -> $a1 KiB)"
[[ ! -e $CHAIN/journal ]] || fail "journal left behind"
check_points br p03 p05 p07 p08 p09 p10
