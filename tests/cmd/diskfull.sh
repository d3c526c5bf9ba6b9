#!/bin/bash
# diskfull.sh: a chain on a full file system (an 8 MiB tmpfs; CRYPTO.md case 13).  A backup that
# does not fit fails with exit 1 and "No space left on device", leaves no point and no temporary
# file, and every earlier point still verifies and restores byte-for-byte; the next backup that
# fits succeeds.  A first backup that cannot even write its key file leaves no chain behind.
source "${top_srcdir:-.}/tests/lib/functions.sh"
requires imgbackup imgrestore imgverify imginfo mount umount cmp
requires_root

mkdir mnt
mount -t tmpfs -o size=8m,mode=0700 imgchain-test "$TESTDIR/mnt" 2>/dev/null ||
	skip "cannot mount a tmpfs"
cleanup_fn umount "$TESTDIR/mnt"
C=mnt/chain

mkrandom_bytes s1 3000000 one
expect_exit 0 imgbackup -q --name p1 $C s1
cp s1 s2
write_at s2 100000 1000 two
expect_exit 0 imgbackup -q --name p2 $C s2
tree=$(sha_tree $C)

# ---- a full backup of 6 MB more does not fit in the 5 MB left ---------------------------------
mkrandom_bytes s3 6000000 three
expect_exit 1 imgbackup --name p3 --full $C s3
expect_msg "^imgbackup: $C/\.tmp-3-[0-9]+\.(img|idx): write at offset [0-9]+: No space left on device$"
expect_no_msg "Segmentation|Aborted"
no_tmp_files $C
[[ $(sha_tree $C) == "$tree" ]] || fail "a failed backup changed the chain"
[[ $(point_count $C) -eq 2 ]] || fail "a failed backup left a point"
expect_exit 0 imgverify -q --data $C
restore_cmp $C p1 s1
restore_cmp $C p2 s2

# ---- an incremental that fits still works, and leaves no temporary file --------------------------
cp s2 s4
write_at s4 2000000 1000 four
expect_exit 0 imgbackup -q --name p4 $C s4
no_tmp_files $C
restore_cmp $C p4 s4

# ---- full to the last byte: even the small backup fails cleanly --------------------------------
dd if=/dev/zero of=mnt/filler bs=65536 status=none 2>/dev/null || true
tree=$(sha_tree $C)
write_at s4 0 100 five
expect_exit 1 imgbackup --name p5 $C s4
expect_msg "No space left on device"
no_tmp_files $C
[[ $(sha_tree $C) == "$tree" ]] || fail "a failed backup changed the chain"
expect_exit 0 imgverify -q $C
# a new chain on the full file system: nothing is left behind
expect_exit 1 imgbackup --name n1 mnt/new s1
expect_msg "No space left on device"
[[ ! -e mnt/new ]] || fail "a failed first backup left mnt/new: $(ls -la mnt/new)"

# ---- space again: the chain carries on --------------------------------------------------------
rm mnt/filler
expect_exit 0 imgbackup -q --name p5 $C s4
no_tmp_files $C
restore_cmp $C p1 s1
restore_cmp $C p2 s2
restore_cmp $C p5 s4
expect_exit 0 imgverify -q --data $C
