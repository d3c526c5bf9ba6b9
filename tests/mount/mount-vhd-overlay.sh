#!/bin/bash
# mount-vhd-overlay.sh: with --overlay, qemu writes through disk.vhd (-f vpc) and disk.vhdx
# (-f vhdx).  The VHDX grows the way a hypervisor grows it: a write into a block that is not
# present appends a payload block at the end of the file, the BAT entry changes through the log,
# the headers' sequence number rises; a write into a present block stays in place.  Every write
# reads back, `qemu-img check` stays clean, a plain copy of the grown file is the source plus the
# writes, and after a remount with the same overlay directory all is back; a read-only mount
# still shows the backup, the other files of the point are untouched and the chain never changed.
. "$(dirname "$0")/mount-vhd-lib.sh"
requires qemu-io qemu-img sha256sum

make_disk_chain 64
(cd "$CHAIN" && sha256sum -- * >"$WORK/chain.sums")
OV=$WORK/overlay
mount_chain "$CHAIN" --overlay "$OV"
X=$MNT/mon/disk.vhdx
V=$MNT/tue/disk.vhd

# VHD: a write inside the disk, one ending at the disk's last byte
qemu-io -f vpc -c 'write -P 0x5a 3M 64k' -c 'write -P 0x3c 67104768 4096' "$V" >/dev/null ||
	fail "qemu-io write via disk.vhd"
qemu-io -f vpc -c 'read -P 0x5a 3M 64k' -c 'read -P 0x3c 67104768 4096' "$V" >/dev/null ||
	fail "disk.vhd readback"
python3 "$VHDX_PY" check-vhd "$V" "$WORK/d1" || fail "disk.vhd footer after a write"
cmp "$MNT/tue/disk.raw" "$WORK/d1" || fail "a write through disk.vhd changed disk.raw"

# VHDX: a present block is written in place, a missing one is appended
size0=$(stat -c %s "$X")
seq0=$(python3 "$VHDX_PY" seq "$X")
hole=$(python3 "$VHDX_PY" hole "$X")
qemu-io -f vhdx -c "write -P 0xa5 $((hole + 4096)) 64k" -c 'write -P 0x77 0 4k' "$X" >/dev/null ||
	fail "qemu-io write via disk.vhdx"
qemu-io -f vhdx -c "read -P 0xa5 $((hole + 4096)) 64k" -c 'read -P 0x77 0 4k' \
	-c "read -P 0 $hole 4k" "$X" >/dev/null || fail "disk.vhdx readback"
size1=$(stat -c %s "$X")
((size1 == size0 + 1048576)) || fail "disk.vhdx did not grow by one block ($size0 -> $size1)"
read -r state off <<<"$(python3 "$VHDX_PY" entry "$X" "$hole")"
[[ $state == 6 && $off == "$size0" ]] || fail "new block's BAT entry: state $state at $off (file was $size0)"
read -r state off <<<"$(python3 "$VHDX_PY" entry "$X" 0)"
[[ $state == 6 && $off -lt $size0 ]] || fail "block 0 moved: state $state at $off"
(($(python3 "$VHDX_PY" seq "$X") > seq0)) || fail "the header's sequence number did not rise"
qemu-img check -f vhdx "$X" >"$WORK/check.out" || fail "qemu-img check: $(cat "$WORK/check.out")"
# a plain copy of the grown file, standalone: the source plus the writes
python3 - "$WORK/d0" "$WORK/want0" "$hole" <<'PY'
import sys
d = bytearray(open(sys.argv[1], "rb").read())
h = int(sys.argv[3])
d[h + 4096:h + 4096 + 65536] = b"\xa5" * 65536
d[0:4096] = b"\x77" * 4096
open(sys.argv[2], "wb").write(d)
PY
cp "$X" "$WORK/copy.vhdx"
qemu-img compare -f raw -F vhdx "$WORK/want0" "$WORK/copy.vhdx" >/dev/null || fail "copy of the grown disk.vhdx"
cmp "$MNT/mon/disk.raw" "$WORK/d0" || fail "a write through disk.vhdx changed disk.raw"
sync

# remount with the same directory: every write is back
unmount_chain
[[ -s $OV/mon/disk.vhdx.map && -s $OV/tue/disk.vhd.map ]] || fail "no overlay files: $(ls -R "$OV")"
mount_chain "$CHAIN" --overlay "$OV"
[[ $(stat -c %s "$X") == "$size1" ]] || fail "grown size lost across a remount"
qemu-io -f vpc -c 'read -P 0x5a 3M 64k' -c 'read -P 0x3c 67104768 4096' "$V" >/dev/null ||
	fail "disk.vhd write lost"
qemu-img compare -f raw -F vhdx "$WORK/want0" "$X" >/dev/null || fail "disk.vhdx writes lost"
qemu-img check -f vhdx "$X" >/dev/null || fail "qemu-img check after a remount"
# a second growth on top of the first, then the whole disk is the source plus every write
hole2=$(python3 "$VHDX_PY" hole "$X")
qemu-io -f vhdx -c "write -P 0x11 $hole2 1M" "$X" >/dev/null || fail "second growth"
qemu-io -f vhdx -c "read -P 0x11 $hole2 1M" -c "read -P 0xa5 $((hole + 4096)) 64k" "$X" >/dev/null ||
	fail "second growth readback"
(($(stat -c %s "$X") == size1 + 1048576)) || fail "second growth: size $(stat -c %s "$X")"
[[ $(dd if="$X" bs=4 skip=262144 count=1 status=none) == loge ]] || fail "qemu left no log entry"
# a crash after the log entry, before the BAT write: the next writer replays the log
hole3=$(python3 "$VHDX_PY" hole "$X")
qemu-io -f vhdx -c "write -P 0x33 $hole3 64k" "$X" >/dev/null || fail "third growth"
python3 "$VHDX_PY" log-crash "$X" "$hole3" || fail "log-crash"
[[ $(python3 "$VHDX_PY" entry "$X" "$hole3") == "2 0" ]] || fail "log-crash did not undo the BAT entry"
! qemu-img check -f vhdx "$X" >/dev/null 2>&1 || fail "a log to replay went unnoticed"
qemu-io -f vhdx -c "read -P 0x33 $hole3 64k" "$X" >/dev/null || fail "the log was not replayed"
[[ $(python3 "$VHDX_PY" entry "$X" "$hole3") == "6 "* ]] || fail "BAT entry not back after replay"
qemu-img check -f vhdx "$X" >/dev/null || fail "qemu-img check after the replay"
unmount_chain

# read-only: the backup as it was; the chain files are untouched
mount_chain "$CHAIN"
qemu-img compare -f raw -F vhdx "$WORK/d0" "$X" >/dev/null || fail "read-only mount shows overlay data in disk.vhdx"
qemu-img compare -f raw -F vpc "$WORK/d1" "$V" >/dev/null || fail "read-only mount shows overlay data in disk.vhd"
[[ $(stat -c %s "$X") == "$size0" ]] || fail "read-only disk.vhdx size"
unmount_chain
(cd "$CHAIN" && sha256sum --quiet -c "$WORK/chain.sums") || fail "chain files changed"
echo "ok"
