#!/bin/bash
# corrupt_record.sh: one flipped bit in a stored block (CRYPTO.md case 1).  The keyless imgverify
# names the file, the point and the block (exit 4), so does imgverify --data; imgrestore of a
# point that needs the block stops with exit 4 and leaves no DEST; points that do not need it
# (the parent, a sibling branch) restore byte-for-byte and verify clean.
source "${top_srcdir:-.}/tests/lib/functions.sh"
requires imgbackup imgrestore imgverify cmp

# p1 full; p2 changes block 1; p3, a branch from p1, changes block 5
mkrandom_bytes s1 2000000 one
expect_exit 0 imgbackup -q --name p1 C s1
cp s1 s2
write_at s2 $((65536 + 100)) 100 two
expect_exit 0 imgbackup -q --name p2 C s2
cp s1 s3
write_at s3 $((5 * 65536 + 100)) 100 three
expect_exit 0 imgbackup -q --name p3 --parent p1 C s3
cp -a C pristine

# ---- a bit of p2's own record for block 1 --------------------------------------------------------
read -r off len pos < <(image_record_of_pos C/00000002.img 1)
flip_bit C/00000002.img $((off + len / 2)) 5

expect_exit 4 imgverify C
expect_msg "^imgverify: C/00000002.img: point 'p2', block 1 \(disk bytes 65536..131071\): .*record checksum mismatch"
expect_msg "^imgverify: C: 1 problem found$"
expect_exit 4 imgverify --data C
expect_msg "C/00000002.img: point 'p2', block 1 .*record checksum mismatch"
expect_exit 4 imgverify C p2
expect_msg "point 'p2', block 1"

expect_exit 4 imgrestore C p2 out
expect_msg "^imgrestore: C/00000002.img: restore point 'p2', block 1 \(bytes 65536..131071\): .*record checksum mismatch"
[[ ! -e out ]] || fail "a failed restore left DEST"
no_tmp_files .
# --force does not destroy an existing DEST either
cp s1 out
expect_exit 4 imgrestore --force C p2 out
cmp out s1 || fail "a failed restore --force changed DEST"
rm out

restore_cmp C p1 s1
restore_cmp C p3 s3
expect_exit 0 imgverify C p1
expect_exit 0 imgverify --data C p3
expect_out "^C: .* authenticated: no problems$"

# ---- a bit of p1's record for block 5: p3 (which replaced block 5) does not need it -----------------
rm -rf C
cp -a pristine C
read -r off len pos < <(image_record_of_pos C/00000001.img 5)
flip_bit C/00000001.img $((off + 30))
expect_exit 4 imgverify C
expect_msg "C/00000001.img: point 'p1', block 5 \(disk bytes 327680..393215\)"
expect_exit 4 imgrestore C p1 out
expect_msg "restore point 'p1', block 5"
expect_exit 4 imgrestore C p2 out
expect_msg "C/00000001.img: restore point 'p2', block 5"
[[ ! -e out ]] || fail "a failed restore left DEST"
restore_cmp C p3 s3

# ---- a bit in the nonce, and in the tag, are caught as well -------------------------------------
for where in nonce tag; do
	rm -rf C
	cp -a pristine C
	read -r off len pos < <(image_record_of_pos C/00000003.img 5)
	[[ $where == nonce ]] && at=$off || at=$((off + len - 1))
	flip_bit C/00000003.img $at 7
	expect_exit 4 imgverify C
	expect_msg "C/00000003.img: point 'p3', block 5"
	expect_exit 4 imgrestore C p3 out
	restore_cmp C p2 s2
done
