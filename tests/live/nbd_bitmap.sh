#!/bin/bash
# nbd_bitmap.sh: --dirty-bitmap NAME reads only what qemu:dirty-bitmap:NAME marks.  A qcow2 with
# persistent bitmaps, written through qemu-io between backups, served by `qemu-nbd -B`: every
# point equals `qemu-img convert` of the qcow2 at its moment, and the server's own trace shows
# that an incremental read only the dirty extents (and the parent's last block).  A bitmap must
# have been recorded for the parent (--next-bitmap): another point's, an unknown one, one the
# server does not export, or one given for a file are refused with no point made; so is any
# use of a damaged record.  Without --parent, the parent is the point the bitmap was recorded for:
# a side branch made since (a quiesced snapshot's post-snapshot writes) is not the base.
source "${top_srcdir:-.}/tests/lib/functions.sh"
source "$top_srcdir/tests/live/live-lib.sh"
requires imgbackup imgrestore imginfo qemu-img qemu-io qemu-nbd

bs=65536
sock=$PWD/s.sock
uri=$(nbd_uri "$sock")
qemu-img create -q -f qcow2 -o compat=1.1 d.qcow2 64M
qemu-io -c "write -P 0x11 0 8M" -c "write -P 0x12 30M 4M" -c "write -P 0x13 $((64 * 1048576 - bs)) $bs" \
	d.qcow2 >/dev/null

# ---- the full, and the bitmap that tracks what comes after it -------------------------------
qemu-img bitmap --add --granularity 64K d.qcow2 b0
qemu-img convert -O raw d.qcow2 m1.raw
start_qemu_nbd "$sock" d.qcow2
expect_exit 0 imgbackup --next-bitmap b0 --name p1 C "$uri"
stop_qemu_nbd "$sock"
restore_cmp C p1 m1.raw
grep -qx "bitmap b0 1 [0-9a-f]\{64\} p1" state/*.bitmaps || fail "b0 not recorded for p1: $(cat state/*.bitmaps)"

# ---- writes: unaligned, across a block boundary, a written zero range, a discard ------------
qemu-io -c "write -P 0x21 $((3 * bs + 100)) 10" -c "write -P 0x22 $((10 * bs - 1000)) 2000" \
	-c "write -z $((30 * 1048576)) $((2 * bs))" -c "discard $((31 * 1048576)) $bs" \
	-c "write -P 0x23 $((50 * 1048576)) $((3 * bs))" d.qcow2 >/dev/null
qemu-img bitmap --add --granularity 64K d.qcow2 b1
qemu-img convert -O raw d.qcow2 m2.raw
start_qemu_nbd "$sock" d.qcow2 -B b0
expect_exit 0 imgbackup --dirty-bitmap b0 --next-bitmap b1 --name p2 C "$uri"
expect_out "incremental point 'p2' \(seq 2\) based on 'p1'"
restore_cmp C p2 m2.raw
# dirty: block 3, blocks 9 and 10, 480..481 (now zero: not read), 496 (discarded: zero, not
# read), 800..802; and the parent's last block 1023 is always read
want="$((3 * bs)) $bs
$((9 * bs)) $((2 * bs))
$((800 * bs)) $((3 * bs))
$((1023 * bs)) $bs"
got=$(served_ranges "$sock" | sort -n | python3 -c '
import sys
runs = []
for line in sys.stdin:
    off, n = map(int, line.split())
    if runs and runs[-1][0] + runs[-1][1] == off:
        runs[-1][1] += n
    else:
        runs.append([off, n])
print("\n".join("%d %d" % tuple(r) for r in runs))')
[[ $got == "$want" ]] || fail "the server read
$got
expected only the dirty extents
$want"
stop_qemu_nbd "$sock"

# ---- the next one on b1 --------------------------------------------------------------------------
qemu-io -c "write -P 0x31 $((7 * bs)) 1" d.qcow2 >/dev/null
qemu-img bitmap --add --granularity 64K d.qcow2 b2
qemu-img convert -O raw d.qcow2 m3.raw
start_qemu_nbd "$sock" d.qcow2 -B b1
expect_exit 0 imgbackup --dirty-bitmap b1 --next-bitmap b2 --name p3 C "$uri"
expect_out "changed 64.0 KiB \(1 blocks?\)"
restore_cmp C p3 m3.raw
[[ $(served_bytes "$sock") -eq $((2 * bs)) ]] || fail "read $(served_bytes "$sock") bytes for one dirty block"
stop_qemu_nbd "$sock"

# ---- refused: a bitmap recorded for another point ---------------------------------------------
qemu-io -c "write -P 0x41 $((12 * bs)) 1" d.qcow2 >/dev/null
qemu-img convert -O raw d.qcow2 m4.raw
start_qemu_nbd "$sock" d.qcow2 -B b1
expect_exit 1 imgbackup --dirty-bitmap b1 --parent p3 --name bad1 C "$uri"
expect_msg "dirty bitmap 'b1' tracks the writes after point 'p2' \(seq 2\), not after the parent 'p3' \(seq 3\): refused"
# ... and without --parent the point b1 was recorded for is the parent
expect_exit 0 imgbackup --dirty-bitmap b1 --name p2b C "$uri"
expect_out "incremental point 'p2b' \(seq 4\) based on 'p2'"
restore_cmp C p2b m4.raw
stop_qemu_nbd "$sock"

# ---- refused: a bitmap never recorded (made by someone else) ----------------------------------
qemu-img bitmap --add d.qcow2 stranger
start_qemu_nbd "$sock" d.qcow2 -B stranger
expect_exit 1 imgbackup --dirty-bitmap stranger --parent p3 --name bad2 C "$uri"
expect_msg "dirty bitmap 'stranger' was not recorded for the parent 'p3' \(seq 3\)"
# ---- refused: a bitmap the server does not export ---------------------------------------------
expect_exit 1 imgbackup --dirty-bitmap b2 --parent p3 --name bad3 C "$uri"
expect_msg "the server does not export dirty bitmap 'b2' \(qemu:dirty-bitmap:b2\)"
stop_qemu_nbd "$sock"
# ---- refused: a bitmap for a file -----------------------------------------------------------------
expect_exit 1 imgbackup --dirty-bitmap b2 --name bad4 C m4.raw
expect_msg "m4.raw: a dirty bitmap needs an NBD source"
expect_exit 2 imgbackup --dirty-bitmap b2 --changed-blocks /dev/null C m4.raw
expect_exit 2 imgbackup --dirty-bitmap 'no/slash' C m4.raw
# ---- refused: a damaged bitmap record (named, with its line) --------------------------------------
rec=$(echo state/*.bitmaps)
cp "$rec" good.bitmaps
printf 'imgchain-bitmaps 1\nbitmap b1 2 %s p2\nbitmap b2 x\n' "$(printf '%064d' 0)" >"$rec"
start_qemu_nbd "$sock" d.qcow2 -B b1
expect_exit 1 imgbackup --dirty-bitmap b1 --parent p2 --name bad5 C "$uri"
expect_msg "$rec: line 3: expected \"bitmap NAME SEQ SEAL POINT\" \(FORMAT.md section 16\)"
stop_qemu_nbd "$sock"
cp good.bitmaps "$rec"
[[ $(point_count C) -eq 4 ]] || fail "a refused backup made a point"
no_tmp_files C

# ---- what the refusal says to do: read everything -----------------------------------------------
start_qemu_nbd "$sock" d.qcow2
expect_exit 0 imgbackup --parent p3 --next-bitmap b2 --name p4 C "$uri"
restore_cmp C p4 m4.raw
stop_qemu_nbd "$sock"

# ---- post-snapshot writes on a side branch: p4 is the crash-consistent snapshot; what its
# quiescing wrote into it (a journal replay) is q4, a child of p4 made from the modified copy.
# Change tracking goes on from p4: without --parent, the next --dirty-bitmap b2 point is based
# on p4 (the point b2 was recorded for), not on the newest point q4.
cp m4.raw q4.raw
write_at q4.raw $((5 * bs + 7)) 300 replay
expect_exit 0 imgbackup --parent p4 --name q4 C q4.raw
expect_out "incremental point 'q4' \(seq 6\) based on 'p4'"
restore_cmp C q4 q4.raw
qemu-io -c "write -P 0x51 $((20 * bs)) 1" d.qcow2 >/dev/null
qemu-img convert -O raw d.qcow2 m5.raw
start_qemu_nbd "$sock" d.qcow2 -B b2
expect_exit 0 imgbackup --dirty-bitmap b2 --name p5 C "$uri"
expect_out "incremental point 'p5' \(seq 7\) based on 'p4'"
restore_cmp C p5 m5.raw
expect_exit 0 imgverify -q --data C
