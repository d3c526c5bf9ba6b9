#!/bin/bash
# head_start_offline.sh: the head start with qcow2 persistent bitmaps kept by `qemu-img bitmap`
# and qemu-nbd, no QMP.  The parent's bitmap b1 is frozen into a copy and a "late" bitmap starts;
# the head start reads the blocks b1 marks from the writable live export while writes go on
# through it; the snapshot command stops the export, copies the qcow2 (the snapshot), freezes the
# late bitmap in the copy, starts the next point's bitmap b2 in the original, writes again (after
# the snapshot) and serves the copy.  The point equals the copy; only the late blocks were read
# from it (qemu-nbd's trace); the next incremental on b2 equals the original.
source "${top_srcdir:-.}/tests/lib/functions.sh"
source "$top_srcdir/tests/live/live-lib.sh"
requires imgbackup imgrestore qemu-img qemu-io qemu-nbd

mib=1048576
bs=65536
qemu-img create -q -f qcow2 d.qcow2 32M
qemu-io -c "write -P 1 0 32M" d.qcow2 >/dev/null
qemu-img bitmap --add d.qcow2 b1
start_qemu_nbd "$PWD/s.sock" d.qcow2
expect_exit 0 imgbackup --next-bitmap b1 --name p1 C "$(nbd_uri "$PWD/s.sock")"
stop_qemu_nbd "$PWD/s.sock"
qemu-io -c "write -P 2 0 4M" -c "write -P 3 20M 1M" d.qcow2 >/dev/null

# the head start begins: the late bitmap starts, b1 is frozen in a copy
qemu-img bitmap --add d.qcow2 late
qemu-img bitmap --add --disable d.qcow2 frozen1
qemu-img bitmap --merge b1 d.qcow2 frozen1
rm -f live.sock live.sock.trace
qemu-nbd -f qcow2 -t -x live -B frozen1 -k "$PWD/live.sock" --pid-file "$PWD/live.sock.pid" \
	--trace "blk_co_preadv,file=$PWD/live.sock.trace" d.qcow2 &
cleanup_fn stop_qemu_nbd "$PWD/live.sock"
wait_socket "$PWD/live.sock"
cleanup_fn stop_qemu_nbd "$PWD/snap.sock"
cat >snap.sh <<'SH'
set -e
qemu-io -f raw -c "write -P 4 0 1M" -c "write -P 5 10M 1M" "nbd+unix:///live?socket=$PWD/live.sock" >/dev/null
kill "$(cat live.sock.pid)"
while kill -0 "$(cat live.sock.pid)" 2>/dev/null; do sleep 0.05; done
cp d.qcow2 snap.qcow2                                   # the snapshot
qemu-img bitmap --add --disable snap.qcow2 frozen2
qemu-img bitmap --merge late snap.qcow2 frozen2
qemu-img bitmap --add d.qcow2 b2                        # the next point's bitmap starts
qemu-img bitmap --remove d.qcow2 late
qemu-img bitmap --remove d.qcow2 frozen1
qemu-io -c "write -P 6 5M 2M" d.qcow2 >/dev/null        # after the snapshot
qemu-nbd -r -f qcow2 -t -x snap -B frozen2 -k "$PWD/snap.sock" --pid-file "$PWD/snap.sock.pid" \
	--trace "blk_co_preadv,file=$PWD/snap.sock.trace" --fork snap.qcow2
SH
expect_exit 0 imgbackup --head-start "nbd+unix:///live?socket=$PWD/live.sock" --dirty-bitmap b1 \
	--bitmap-export frozen1 --late-bitmap frozen2 --snapshot-cmd "bash snap.sh" \
	--next-bitmap b2 --name p2 C "nbd+unix:///snap?socket=$PWD/snap.sock"
expect_out "head start read 5.1 MiB from the live disk, then 2.0 MiB from the snapshot"
qemu-img convert -O raw snap.qcow2 snap.raw
restore_cmp C p2 snap.raw
[[ $(served_ranges "$PWD/live.sock" | sort -n | tr '\n' ' ') == "0 1048576 1048576 1048576 2097152 1048576 3145728 1048576 20971520 1048576 $((32 * mib - bs)) $bs " ]] ||
	fail "the head start read: $(served_ranges "$PWD/live.sock" | tr '\n' ' ')"
[[ $(served_ranges "$PWD/snap.sock" | sort -n | tr '\n' ' ') == "0 1048576 10485760 1048576 " ]] ||
	fail "at the snapshot imgbackup read: $(served_ranges "$PWD/snap.sock" | tr '\n' ' ')"
stop_qemu_nbd "$PWD/snap.sock"

# the next incremental, on b2
qemu-img convert -O raw d.qcow2 now.raw
cmp -s now.raw snap.raw && fail "the write after the snapshot did not happen"
start_qemu_nbd "$PWD/s.sock" d.qcow2 -B b2
expect_exit 0 imgbackup --dirty-bitmap b2 --name p3 C "$(nbd_uri "$PWD/s.sock")"
expect_out "changed 2.0 MiB"
restore_cmp C p3 now.raw
expect_exit 0 imgverify -q --data C
