#!/bin/bash
# source_shrinks.sh: a source that shrinks after imgbackup measured it fails the backup (exit 1,
# "shrank") instead of recording the lost tail as zeros; no point and no temporary file remain.
# A source that is smaller (or larger) than its parent is fine, and --changed-blocks ranges past
# the end of the source are refused.
#
# Deterministic race: imgbackup opens and measures SOURCE before it reads the passphrase, so with
# --passphrase-file on a FIFO it waits, SOURCE measured, until the test writes the passphrase.
source "${top_srcdir:-.}/tests/lib/functions.sh"
requires imgbackup imgrestore imginfo mkfifo truncate cmp

mkrandom_bytes s1 4000000 one
cp s1 src
expect_exit 0 imgbackup -q --name p1 C src
tree=$(sha_tree C)
mkfifo pass.fifo

# backup_shrinking NAME NEWSIZE: run imgbackup on src, shrink src to NEWSIZE once measured
backup_shrinking()
{
	local pid
	imgbackup --name "$1" --passphrase-file pass.fifo C src >last.out 2>last.err &
	pid=$!
	exec 3>pass.fifo    # returns once imgbackup opened the FIFO: src is measured
	truncate -s "$2" src
	printf '%s\n' "$IMGCHAIN_PASSPHRASE" >&3
	exec 3>&-
	set +e
	wait $pid
	LAST_RC=$?
	set -e
}

shrink_case()
{
	cp s1 src
	backup_shrinking shrunk $1
	[[ $LAST_RC -eq 1 ]] || fail "shrinking to $1: imgbackup exited $LAST_RC: $(cat last.out last.err)"
	expect_msg "^imgbackup: src: source shrank while being read"
	[[ $(sha_tree C) == "$tree" ]] || fail "a failed backup changed the chain: $(imginfo C)"
	no_tmp_files C
}

# shrunk to the middle of a block: the read of that block comes up short
shrink_case 1000000

# a smaller source than the parent's, then a larger one: both restore exactly
cp s1 small
truncate -s 1234567 small
write_at small 5000 10 small
expect_exit 0 imgbackup -q --name p2 C small
cp small big
truncate -s 5000000 big
write_at big 4500000 1000 big
expect_exit 0 imgbackup -q --name p3 C big
restore_cmp C p1 s1
restore_cmp C p2 small
restore_cmp C p3 big

# --changed-blocks ranges are checked against the source's size, not the parent's
printf '1234000 567\n' >cb.ok
printf '1234000 568\n' >cb.bad
tree=$(sha_tree C)
expect_exit 1 imgbackup --changed-blocks cb.bad --parent p2 C small
expect_msg "^imgbackup: cb.bad:1: range 1234000\+568 is past the end of the source \(1234567 bytes\)$"
[[ $(sha_tree C) == "$tree" ]] || fail "a refused backup changed the chain"
expect_exit 0 imgbackup -q --name p4 --changed-blocks cb.ok --parent p2 C small
restore_cmp C p4 small

# shrunk to a block boundary: no read comes up short, and the lost tail must not be taken for
# holes (SEEK_DATA's ENXIO past the new end) and recorded as zeros
tree=$(sha_tree C)
shrink_case 1048576
