#!/bin/bash
# cdp-fold.sh: `imgconsolidate --fold-cdp KEEP:EVERY` folds the CDP journal into restore
# points WITHOUT the key (FORMAT.md 15.5): every folded point restores byte for byte the
# disk at its checkpoint and verifies with the key (its seal is the checkpoint's map
# seal), the newest session stays in the journal and still restores with --at, retention
# (--keep-last) works on the folded points.  SIGKILL inside a fold (while a point's records
# are copied, after a point was committed, before the session's file is removed) leaves a
# chain whose every point verifies; the next run finishes the fold with the same points.
source "${top_srcdir:-.}/tests/lib/functions.sh"
source "$top_srcdir/tests/cdp/cdp-lib.sh"
requires imgverify imgconsolidate
HOOKED=$top_builddir/tests/hooks/imgconsolidate
[[ -x $HOOKED ]] || fail "no $HOOKED (make check builds it)"
iso() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%S.%NZ; }
nokey() { env -u IMGCHAIN_PASSPHRASE -u IMGCHAIN_PASSPHRASE_FILE "$@"; }

size=$((3 * 1048576 + 777))
cdp_setup $size
cdp_start
cdp_io flush; cdp_mark 0
for k in 1 2 3 4; do
	sleep 1.1                   # each mark in its own second: one point each (EVERY 1s)
	cdp_io "write -P 0x$k$k $((k * 300000)) $((k * 50000))" "write -z $((k * 65536 * 5)) 70000" flush
	cdp_mark $k
done
cdp_io 'discard 0 131072' flush; cdp_mark 5   # same second as 4: folded into one point
cdp_stop
cdp_start                                      # session 2: the newest, never folded
cdp_io 'write -P 0x99 5000 9000' flush; cdp_mark 6
cdp_stop
[[ $(ls C/cdp | wc -l) == 2 ]] || fail "expected two sessions: $(ls C/cdp)"
cp -a C C.orig

# ---- fold without the key ------------------------------------------------------------------
expect_exit 0 nokey imgconsolidate --fold-cdp 0:1s C
mapfile -t names < <(sed -n 's/.* into point \(cdp-[^ ]*\) .*/\1/p' last.out)
((${#names[@]} >= 5)) || fail "expected 5 folded points or more: $(cat last.out)"
[[ $(ls C/cdp) == 00000002.cdp ]] || fail "the folded session is still there, or the newest is gone: $(ls C/cdp)"
# the disk at a folded point: the first mark at or after its checkpoint's time
mark_of()
{
	local t=${1#cdp-} k
	for k in 0 1 2 3 4 5; do
		[[ $(iso "${T[$k]}") < $t ]] || { echo "$k"; return; }
	done
	fail "no mark after $1"
}
check_points()
{
	local chain=$1 n k
	for n in "${names[@]}"; do
		k=$(mark_of "$n")
		expect_exit 0 imgrestore -q "$chain" "$n" r.fold
		cmp r.fold "snap.$k" || fail "$chain: folded point $n is not the disk at mark $k"
		rm -f r.fold
	done
}
check_points C
# imginfo says which points were folded, from which session and checkpoint
expect_exit 0 nokey imginfo --json C
python3 - last.out "${names[@]}" <<'PY' || fail "imginfo --json does not show the folded points: $(cat last.out)"
import json, sys
pts = {p["name"]: p for p in json.load(open(sys.argv[1]))["points"]}
names = sys.argv[2:]
ks = []
sessions = {pts[n]["cdp_session"] for n in names}
assert len(sessions) == 1 and len(sessions.pop()) == 16, names
for n in names:
    p = pts[n]
    assert p["folded"] is True, p
    ks.append(p["cdp_checkpoint"])
assert ks == sorted(ks) and len(set(ks)) == len(ks), ks
for n, p in pts.items():
    if n not in names:
        assert p["folded"] is False and p["cdp_session"] is None and p["cdp_checkpoint"] is None, p
PY
expect_exit 0 nokey imginfo C
grep -q "${names[0]} .*(CDP session [0-9a-f]\{16\}, checkpoint [0-9]*)" last.out ||
	fail "imginfo's listing does not note a folded point: $(cat last.out)"
[[ $(mark_of "${names[-1]}") == 5 ]] || fail "the last folded point is not the session's end"
expect_exit 0 imgverify -q --data C
expect_exit 0 imgrestore -q -P pass --at "${T[6]}" C r.6
cmp r.6 snap.6 || fail "the newest session after a fold: differs"
rm -f r.6
# a second run has nothing left to fold
expect_exit 0 nokey imgconsolidate --fold-cdp 0:1s C
expect_out "0 checkpoints folded"

# ---- a folded point changed: its seal fails ------------------------------------------------
cp -a C C.bad
python3 - C.bad/*.img <<'PY'
import os, struct, sys
# the largest folded point (a later one may hold no record: nothing changed since)
p = max((f for f in sys.argv[1:] if struct.unpack_from("<I", open(f, "rb").read(2048), 1024 + 20)[0] == 1),
        key=os.path.getsize)
d = bytearray(open(p, "rb").read())
d[4096 + 30] ^= 1       # the first record's ciphertext: the record fails, the seal stands
open(p, "wb").write(d)
PY
expect_exit 4 imgverify -q C.bad
rm -rf C.bad
cp -a C C.bad                   # the checkpoint it claims (slot A, checksum fixed): seal mismatch
python3 - "$(ls C.bad/*.img | tail -n 1)" "$top_srcdir/tests/lib" <<'PY'
import struct, sys
sys.path.insert(0, sys.argv[2])
from icimg import xxh64
p = sys.argv[1]
d = bytearray(open(p, "rb").read())
s = 1024
assert struct.unpack_from("<I", d, s + 20)[0] == 1, "not a folded point"
struct.pack_into("<Q", d, s + 288, struct.unpack_from("<Q", d, s + 288)[0] - 1)
struct.pack_into("<Q", d, s + 504, xxh64(bytes(d[s:s + 504])))
open(p, "wb").write(d)
PY
expect_exit 4 env IMGCHAIN_STATE_DIR="$TESTDIR/state.bad" imgverify --data C.bad
expect_msg "seal mismatch"
rm -rf C.bad

# ---- retention over folded points (keyless) --------------------------------------------------
expect_exit 0 nokey imgconsolidate -q --keep-last 2 C
expect_exit 0 imgverify -q --data C
for n in "${names[@]: -2}"; do
	expect_exit 0 imgrestore -q C "$n" r.keep
	cmp r.keep "snap.$(mark_of "$n")" || fail "$n after --keep-last 2: differs"
	rm -f r.keep
done

# ---- a backup on top of a folded point (the newest point): an incremental that restores
expect_exit 0 imgbackup -q -n after C disk
expect_exit 0 imgrestore -q C after r.after
cmp r.after disk || fail "a backup after the fold does not restore"
rm -f r.after
expect_exit 0 imgverify -q --data C

# ---- SIGKILL inside a fold ---------------------------------------------------------------------
for at in fold-record:1 fold-record:7 fold-written:1 fold-written:3 fold-remove:1; do
	rm -rf C.k
	cp -a C.orig C.k
	expect_exit 137 nokey env IMGCHAIN_TEST_CRASH_AT=$at "$HOOKED" --fold-cdp 0:1s C.k
	expect_exit 0 env IMGCHAIN_STATE_DIR="$TESTDIR/state.$at" imgverify -q --data C.k
	expect_exit 0 nokey imgconsolidate --fold-cdp 0:1s C.k
	[[ $(ls C.k/cdp) == 00000002.cdp ]] || fail "after a kill at $at: $(ls C.k/cdp)"
	[[ $(ls C.k/*.img | wc -l) == $((${#names[@]} + 1)) ]] ||
		fail "after a kill at $at: $(ls C.k/*.img | wc -l) images, expected $((${#names[@]} + 1))"
	IMGCHAIN_STATE_DIR="$TESTDIR/state.$at" check_points C.k
	expect_exit 0 env IMGCHAIN_STATE_DIR="$TESTDIR/state.$at" imgverify -q --data C.k
	rm -rf C.k
done
no_tmp_files .
