#!/bin/bash
# cdp-gap.sh: the journal cannot be written (one fdatasync of the journal fails with EIO, as a
# device that lost a write: tests/lib/faultsync.so).
#   on-error=fail (default): that flush fails, and so does every later write: the guest never
#     believes the journal holds what it does not; the checkpoints before restore exactly.
#   on-error=gap: the flush succeeds and the filter serves on; the next flush starts a new
#     session (the disk as it then is) that records the gap: a time inside the gap is refused
#     (exit 1, "in a gap"), times before it and after it restore exactly.
# Bounded: session-size= starts a new session at the flush that finds the current one that
# big, keep-sessions= removes the oldest: the newest checkpoints restore exactly, the removed
# ones are gone (exit 1).
source "${top_srcdir:-.}/tests/lib/functions.sh"
source "$top_srcdir/tests/cdp/cdp-lib.sh"

shim=$top_builddir/tests/lib/faultsync.so
[[ -f $shim ]] || fail "no $shim (make check builds it)"
export IMGCHAIN_FAULT_SYNC=$TESTDIR/trigger:.cdp
size=$((4 * 1048576))
cdp_setup $size

# ---- on-error=fail -------------------------------------------------------------------------
LD_PRELOAD=$shim cdp_start
cdp_io flush; cdp_mark 0
cdp_io 'write -P 0x11 0 100000' flush; cdp_mark 1
touch trigger
if qemu-io -t writeback -f raw "$URI" -c 'write -P 0x22 200000 5000' -c flush >fail.log 2>&1; then
	fail "the flush did not fail"
fi
[[ ! -e trigger ]] || fail "the journal's fdatasync was not reached"
grep -q "fdatasync: Input/output error" nbdkit.log || { cat nbdkit.log >&2; fail "no message"; }
cp disk before-write
qemu-io -t writeback -f raw "$URI" -c 'write -P 0x33 300000 5000' >fail2.log 2>&1 || true
grep -q 'write failed' fail2.log || { cat fail2.log >&2; fail "a write after the failure went through"; }
cmp disk before-write || fail "a write refused by the filter changed the disk"
for k in 0 1; do
	expect_exit 0 imgrestore -P pass --at "${T[$k]}" C r
	cmp r "snap.$k" || fail "on-error=fail: checkpoint $k differs"
	rm r
done
cdp_stop

# ---- on-error=gap --------------------------------------------------------------------------
rm -rf C/cdp
LD_PRELOAD=$shim cdp_start on-error=gap
cdp_io flush; cdp_mark 0
cdp_io 'write -P 0x44 0 100000' flush; cdp_mark 1
touch trigger
# acknowledged, the journal lost it; the close's flush starts a new session 0.5 s later
cdp_io 'write -P 0x55 200000 5000' flush 'sleep 500'
[[ ! -e trigger ]] || fail "the journal's fdatasync was not reached"
cdp_io 'write -P 0x66 300000 5000' flush; cdp_mark 2
grep -q 'journalling again after the gap' nbdkit.log || fail "no new session: $(cat nbdkit.log)"
[[ $(ls C/cdp | wc -l) -eq 2 ]] || fail "expected two sessions: $(ls C/cdp)"
for k in 0 1 2; do
	expect_exit 0 imgrestore -P pass --at "${T[$k]}" C r
	cmp r "snap.$k" || fail "on-error=gap: checkpoint $k differs"
	rm r
done
# a moment inside the gap: between the header's gap_since and the new session's checkpoint 0
gap=$(python3 - C/cdp/00000002.cdp <<'PY'
import struct, sys
d = open(sys.argv[1], "rb").read()
ns, s = struct.unpack_from("<Iq", d, 84)
off = 4096
while struct.unpack_from("<I", d, off)[0] == 0x524a4349:
    off += 64 + struct.unpack_from("<I", d, off + 24)[0]
ts, tns = struct.unpack_from("<qI", d, off + 16)
a, b = s * 10**9 + ns, ts * 10**9 + tns
assert a < b, (a, b)
m = (a + b) // 2
print("%d.%09d" % (m // 10**9, m % 10**9))
PY
)
expect_exit 0 imgrestore -P pass --checkpoints C
expect_out "gap: session 1 stopped journalling at "
expect_out "session 2 checkpoint 0 "
expect_exit 1 imgrestore -P pass --at "$gap" C r
expect_msg "is in a gap of the journal: session 1 stopped journalling at"
[[ ! -e r ]] || fail "a refused restore left DEST"
cdp_stop

# ---- session-size= and keep-sessions= --------------------------------------------------------
rm -rf C/cdp
cdp_start session-size=200K keep-sessions=2
cdp_io flush; cdp_mark 0
for k in 1 2 3 4 5; do                  # 300 KB of random bytes: one new session each
	mkrandom_bytes "rnd.$k" 300000 "r$k"
	cdp_io "write -s rnd.$k $((k * 300000)) 300000" flush; cdp_mark $k
done
cdp_stop
n=$(ls C/cdp | wc -l)
((n == 2)) || fail "keep-sessions=2: $n sessions: $(ls C/cdp)"
for f in C/cdp/*.cdp; do
	(($(stat -c %s "$f") < 2 * 1048576)) || fail "$f: not bounded by session-size"
done
cdp_check 4 5
cdp_gone 1
