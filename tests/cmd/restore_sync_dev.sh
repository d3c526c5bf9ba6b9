#!/bin/bash
# restore_sync_dev.sh: imgrestore --sync and --sync-from onto block devices (loop devices).
# Onto a zeroed device only the data blocks are written; onto a device holding another point
# or random damage only what differs, zero blocks written as zeros (no holes in a device);
# --sync-from never reads the device; the bytes past the disk are never touched; a device
# smaller than the disk is refused untouched.  Counted from outside with strace.
source "${top_srcdir:-.}/tests/lib/functions.sh"
source "$top_srcdir/tests/cmd/restore_sync_lib.sh"
requires imgbackup imgrestore strace losetup cmp python3
requires_root

loopdev()
{
	LOOP=$(losetup -f --show "$1" 2>/dev/null) || skip "cannot set up a loop device"
	cleanup_fn losetup -d "$LOOP"
}

bs=65536
size1=$((6 * 1048576))
two_points $size1 "2 30 31 90" 40

devsize=$((8 * 1048576))

# ---- onto a zeroed device: the data blocks only ----------------------------------------------
truncate -s $devsize dev.img
loopdev dev.img
dev=$LOOP
traced_sync /dev/null s1 dev "$I1" -- --sync C p1 "$dev"
cmp -n $size1 "$dev" s1 || fail "--sync onto a zeroed device: it does not hold p1"

# ---- --sync-from: the device holds p1 --------------------------------------------------------
head -c $size1 "$dev" >before
traced_sync before s2 dev "$I2" -- --sync-from p1 C p2 "$dev"
cmp -n $size1 "$dev" s2 || fail "--sync-from p1 onto the device: it does not hold p2"

# ---- random damage, and bytes past the disk --------------------------------------------------
mkrandom_bytes junk 65536 junk
dd if=junk of="$dev" bs=4096 seek=$((size1 / 4096)) count=16 conv=notrunc status=none
python3 - "$dev" $size1 <<'EOF'
import os, random, sys
r = random.Random("devdamage")
fd = os.open(sys.argv[1], os.O_WRONLY)
for off in [11 * 65536 + 3, 40 * 65536 + 9] + [r.randrange(int(sys.argv[2]) - 300) for _ in range(5)]:
    os.pwrite(fd, r.randbytes(r.randint(1, 300)), off)
os.close(fd)
EOF
sync
dd if="$dev" of=past bs=4096 skip=$((size1 / 4096)) status=none
head -c $size1 "$dev" >before
cmp -s before s2 && fail "the damage changed nothing"
traced_sync before s2 dev "$I2" -- --sync C p2 "$dev"
cmp -n $size1 "$dev" s2 || fail "--sync onto a damaged device: it does not hold p2"
cmp -i $size1:0 "$dev" past || fail "bytes past the disk's end were changed"

# ---- a device smaller than the disk ----------------------------------------------------------
truncate -s $((4 * 1048576)) small.img
loopdev small.img
cp small.img small.orig
expect_exit 1 imgrestore --sync C p2 "$LOOP"
expect_msg "^imgrestore: $LOOP: device is smaller than the disk \($size1 bytes\)$"
cmp small.img small.orig || fail "a refused sync wrote to the device"
