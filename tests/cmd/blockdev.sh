#!/bin/bash
# blockdev.sh: block devices (loop devices) as SOURCE and as DEST.  A restore onto a device that
# holds old data writes every byte of the disk, zero blocks included, and nothing past it; a
# device smaller than the disk is refused; a backup reads a device's whole size.
source "${top_srcdir:-.}/tests/lib/functions.sh"
requires imgbackup imgrestore losetup cmp
requires_root

# loopdev FILE: attach FILE to a loop device, detached at exit; sets LOOP
loopdev()
{
	LOOP=$(losetup -f --show "$1" 2>/dev/null) || skip "cannot set up a loop device"
	cleanup_fn losetup -d "$LOOP"
}

bs=65536
size=$((3 * 1048576 + 4096))
truncate -s $size s1
write_at s1 0 $((20 * bs)) one
expect_exit 0 imgbackup -q --name p1 C s1
cp s1 s2
zero_at s2 $((2 * bs)) $((3 * bs))       # three data blocks become zeros
write_at s2 $((size - 100)) 100 two
expect_exit 0 imgbackup -q --name p2 C s2

# ---- restore onto a device full of old data --------------------------------------------------
mkrandom_bytes dev.img $((4 * 1048576)) garbage
cp dev.img dev.orig
loopdev dev.img
dev=$LOOP
[[ -b $dev ]] || fail "$dev is not a block device"
expect_exit 0 imgrestore C p2 "$dev"
expect_out "^restored 'p2' to $dev: "
sync
cmp -n $size "$dev" s2 || fail "the device does not hold p2 (zero blocks not written?)"
cmp -i $size:$size "$dev" dev.orig || fail "bytes past the disk's end were changed"
expect_exit 0 imgrestore C p1 "$dev"    # a device is always overwritten, no --force needed
cmp -n $size "$dev" s1

# ---- a device smaller than the disk ------------------------------------------------------------
truncate -s $((2 * 1048576)) small.img
loopdev small.img
small=$LOOP
cp small.img small.orig
expect_exit 1 imgrestore C p2 "$small"
expect_msg "^imgrestore: $small: device is smaller than the disk \($size bytes\)$"
cmp small.img small.orig || fail "a refused restore wrote to the device"

# ---- a device as SOURCE: its whole size is read ------------------------------------------------
expect_exit 0 imgbackup --name fromdev C "$dev"
expect_out "disk 4.0 MiB"
expect_exit 0 imgrestore C fromdev out
cmp out "$dev"
