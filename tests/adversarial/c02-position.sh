#!/bin/bash
# c02-position.sh (doc/SECURITY.md case 2): a block's position changed in its index entry, every
# checksum fixed.  Keyless imgverify cannot tell (the structure is sound); the AEAD's additional
# data binds the position: imgverify --data fails authentication for the block, imgrestore
# refuses, a mount does not serve the point (its seal fails first) but serves the others; the
# chain and the state are unchanged.  Also a block moved to a position its point does not have
# (past the end of the disk): rejected by bounds before any key is used.
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
make_chain

# p2's block 9 relabelled as block 10 (which p2 did not change)
set_entry_pos C/00000002.img 9 10
snap
expect_exit 0 imgverify C
expect_exit 4 imgverify --data C
expect_msg "^imgverify: C/00000002.img: point 'p2', block 10 \(disk bytes 655360..720895\): block 10 \(point seq 2\): authentication failed$"
expect_msg "^imgverify: C/00000002.img: restore point 'p2': seal mismatch \(its block map or metadata was changed\)$"
expect_exit 4 imgrestore C p2 out
expect_msg "^imgrestore: C/00000002.img: restore point 'p2': seal mismatch"
[[ ! -e out ]] || fail "a failed restore left DEST"
restore_cmp C p1 s1
restore_cmp C p3 s3
expect_exit 4 imgbackup -q --parent p2 --name p4 C s2
expect_msg "seal mismatch"
no_tmp_files C
unchanged "reading a chain with a moved block"
mount_point_eio C p2 "restore point 'p2': .*seal mismatch"
mount_check C p1 s1
unchanged "mounting a chain with a moved block"

# p3's block 12 moved to block 16: p3's disk has 16 blocks, so the entry is out of bounds
fresh
set_entry_pos C/00000003.img 12 16
snap
expect_exit 4 imgverify C
expect_msg "^imgverify: C/00000003.img: index entry 0 \(block 16\): fields out of bounds$"
expect_exit 4 imgrestore C p3 out
expect_msg "^imgrestore: C/00000003.img: index entry 0 \(block 16\): fields out of bounds$"
[[ ! -e out ]] || fail "a failed restore left DEST"
restore_cmp C p2 s2
unchanged "reading a chain with a block past the end"
