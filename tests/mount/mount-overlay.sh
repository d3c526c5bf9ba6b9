#!/bin/bash
# mount-overlay.sh: with --overlay, writes land in the overlay directory: disk.raw and
# disk-flat.vmdk show one disk (a write through one reads back through the other), qemu
# rewrites the descriptor's CID, a sparse VMDK grows a new grain, hypervisor lock files
# and directories come and go; after fsync and a remount with the same directory every
# write is back, a read-only mount still shows the backup, and the chain's files never
# changed (sha256).
. "$(dirname "$0")/mount-lib.sh"
requires qemu-io qemu-img sha256sum

make_disk_chain 64
(cd "$CHAIN" && sha256sum -- * >"$WORK/chain.sums")
OV=$WORK/overlay
mount_chain "$CHAIN" --overlay "$OV"
mopts=$(awk -v m="$MNT" '$2 == m && $3 == "fuse.imgmount" { print $4 }' /proc/mounts)
[[ $mopts == rw,* ]] || fail "a writable mount is listed with options '$mopts'"

# 1. raw: an unaligned write, visible through disk-flat.vmdk at once
printf 'imgchain overlay test' | dd of="$MNT/tue/disk.raw" bs=1 seek=1000003 conv=notrunc,fsync status=none
dd if="$MNT/tue/disk-flat.vmdk" bs=1 skip=1000003 count=21 status=none >"$WORK/got"
[[ $(cat "$WORK/got") == "imgchain overlay test" ]] || fail "raw write not seen through flat"
# a whole 1 MiB through flat, seen through raw
head -c 1M /dev/urandom >"$WORK/mib"
dd if="$WORK/mib" of="$MNT/tue/disk-flat.vmdk" bs=1M seek=7 conv=notrunc,fsync status=none
cmp <(dd if="$MNT/tue/disk.raw" bs=1M skip=7 count=1 status=none) "$WORK/mib" || fail "flat write not seen through raw"

# 2. the descriptor: qemu rewrites its CID on the first write through the VMDK pair
cid0=$(grep -a '^CID=' "$MNT/wed/disk.vmdk")
qemu-io -f vmdk -c 'write -P 0x5a 3M 64k' "$MNT/wed/disk.vmdk" >/dev/null || fail "qemu-io write via disk.vmdk"
cid1=$(grep -a '^CID=' "$MNT/wed/disk.vmdk")
[[ $cid0 != "$cid1" ]] || fail "qemu did not rewrite the CID"
qemu-img check -f vmdk "$MNT/wed/disk.vmdk" >/dev/null || fail "qemu-img check after write"

# 3. sparse VMDK: write into a hole, qemu allocates a new grain (the file grows)
size0=$(stat -c %s "$MNT/mon/disk-sparse.vmdk")
hole=$(qemu-img map -f vmdk --output=json "$MNT/mon/disk-sparse.vmdk" |
	python3 -c 'import json,sys; print(next(r["start"] for r in json.load(sys.stdin) if not r["data"]))')
qemu-io -f vmdk -c "write -P 0xa5 $hole 64k" "$MNT/mon/disk-sparse.vmdk" >/dev/null || fail "qemu-io write via sparse"
qemu-io -f vmdk -c "read -P 0xa5 $hole 64k" "$MNT/mon/disk-sparse.vmdk" >/dev/null || fail "sparse readback"
qemu-img check -f vmdk "$MNT/mon/disk-sparse.vmdk" >/dev/null || fail "qemu-img check of the grown sparse file"
size1=$(stat -c %s "$MNT/mon/disk-sparse.vmdk")
((size1 > size0)) || fail "sparse file did not grow ($size0 -> $size1)"

# 4. ESXi lock files and Workstation lock directories
touch "$MNT/tue/.lck-00000123"
mkdir "$MNT/tue/disk.vmdk.lck"
echo pid >"$MNT/tue/disk.vmdk.lck/M12345.lck"
[[ $(cat "$MNT/tue/disk.vmdk.lck/M12345.lck") == pid ]] || fail "lock file content"
ls -a "$MNT/tue" | grep -q '^.lck-00000123$' || fail "lck file not listed"
mv "$MNT/tue/disk.vmdk.lck/M12345.lck" "$MNT/tue/disk.vmdk.lck/M2.lck"
rm "$MNT/tue/disk.vmdk.lck/M2.lck"
rmdir "$MNT/tue/disk.vmdk.lck"
rm "$MNT/tue/.lck-00000123"
[[ ! -e $MNT/tue/disk.vmdk.lck && ! -e $MNT/tue/.lck-00000123 ]] || fail "lock entries not removed"
touch "$MNT/wed/.lck-kept"
! rm "$MNT/wed/disk.raw" 2>/dev/null || fail "disk.raw could be removed"
! (echo x >"$MNT/wed/info.json") 2>/dev/null || fail "info.json was writable"
sync

# 5. remount with the same directory: everything is back
unmount_chain
mount_chain "$CHAIN" --overlay "$OV"
[[ $(dd if="$MNT/tue/disk.raw" bs=1 skip=1000003 count=21 status=none) == "imgchain overlay test" ]] ||
	fail "raw write lost across a remount"
cmp <(dd if="$MNT/tue/disk-flat.vmdk" bs=1M skip=7 count=1 status=none) "$WORK/mib" || fail "flat write lost"
[[ $(grep -a '^CID=' "$MNT/wed/disk.vmdk") == "$cid1" ]] || fail "descriptor rewrite lost"
qemu-io -f vmdk -c 'read -P 0x5a 3M 64k' "$MNT/wed/disk.vmdk" >/dev/null || fail "VMDK pair write lost"
qemu-io -f vmdk -c "read -P 0xa5 $hole 64k" "$MNT/mon/disk-sparse.vmdk" >/dev/null || fail "sparse write lost"
[[ -e $MNT/wed/.lck-kept ]] || fail "extra file lost"
# the rest of the disk is still the backup's
python3 - "$MNT/tue/disk.raw" "$WORK/d1" "$WORK/mib" <<'PY' || fail "tue is not its backup plus the writes"
import sys
a, b = open(sys.argv[1], "rb").read(), bytearray(open(sys.argv[2], "rb").read())
b[1000003:1000024] = b"imgchain overlay test"
b[7 << 20:8 << 20] = open(sys.argv[3], "rb").read()
sys.exit(0 if a == bytes(b) else 1)
PY
cmp "$MNT/mon/disk.raw" "$WORK/d0" || fail "mon's disk.raw changed (only its sparse file was written)"
unmount_chain

# 6. read-only again: the backup as it was; the chain files are untouched
mount_chain "$CHAIN"
cmp "$MNT/tue/disk.raw" "$WORK/d1" || fail "read-only mount shows overlay data"
unmount_chain
(cd "$CHAIN" && sha256sum --quiet -c "$WORK/chain.sums") || fail "chain files changed"
echo "ok"
