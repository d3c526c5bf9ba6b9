#!/bin/bash
# corrupt.sh: a bit flipped in a record that a merge copies stops it with exit status 4
# and leaves every file of the chain as it was (sha256 before and after); the rest of the
# chain still works.  (Where the file system shares extents the merge reads the records it
# clones only with --verify: $CONS_VERIFY; tests/consolidate/reflink.sh.)
source "${top_srcdir:-.}/tests/consolidate/cons-lib.sh"
make_small_chain

img=$CHAIN/$(point_field p06 file)
read -r off len pos < <(image_record_offset "$img" 3)
flip_bit "$img" $((off + len / 2)) 5
before=$(sha_tree "$CHAIN")

# into an incremental (new file), into the full (appended in place, then cut back),
# and retention (two steps; the first, which does not touch p06, completes)
keyless_expect 4 $CONS_VERIFY --merge p05..p06 "$CHAIN"
expect_msg "block $pos: record checksum mismatch"
[[ $(sha_tree "$CHAIN") == "$before" ]] || fail "the chain changed after a merge stopped on damage"
no_tmp_files "$CHAIN"
[[ ! -e $CHAIN/journal ]] || fail "journal left behind"

keyless_expect 4 $CONS_VERIFY --merge p00..p08 "$CHAIN"
expect_msg "record checksum mismatch"
[[ $(sha_tree "$CHAIN") == "$before" ]] || fail "the chain changed after an in-place merge stopped on damage"
no_tmp_files "$CHAIN"

check_points_except_damaged() {
	local n
	for n in p00 p01 p02 p03 p04 p05 br; do
		rm -f "$TESTDIR/out"
		imgrestore -q "$CHAIN" "$n" "$TESTDIR/out" || fail "restore of '$n' failed"
		cmp -s "$TESTDIR/out" "$SRC/$n" || fail "'$n' does not restore byte-identical"
	done
}
check_points_except_damaged
# keyless verify names the damage
expect_exit 4 imgverify "$CHAIN"
expect_msg "block $pos"
