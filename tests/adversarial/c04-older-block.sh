#!/bin/bash
# c04-older-block.sh (doc/SECURITY.md case 4): p2's block 3 replaced by p1's older version of block
# 3 (record and entry: origin 1 and p1's point id, its own checksum and digest).  The record is
# authentic for (block 3, origin 1), so only the seal can tell: keyless imgverify passes, imgverify
# --data, imgrestore, imgbackup (as a parent) and a mount refuse p2 with "seal mismatch"; nothing
# changes.
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
make_chain

icimg_py C/00000002.img C/00000001.img <<'EOF'
import sys, icimg
new, old = icimg.Image(sys.argv[1]), icimg.Image(sys.argv[2])
e, o = new.entry(3), old.entry(3)
for k in ("record", "stored_len", "plain_len", "origin", "origin_id", "kind", "rec_hash", "digest"):
    e[k] = o[k]
new.write()
EOF
snap
expect_exit 0 imgverify C
expect_exit 4 imgverify --data C
expect_msg "^imgverify: C/00000002.img: restore point 'p2': seal mismatch \(its block map or metadata was changed\)$"
expect_no_msg "authentication failed"
expect_exit 4 imgrestore C p2 out
expect_msg "^imgrestore: C/00000002.img: restore point 'p2': seal mismatch"
[[ ! -e out ]] || fail "a failed restore left DEST"
expect_exit 4 imgbackup -q --parent p2 --name p4 C s2
expect_msg "seal mismatch"
no_tmp_files C
restore_cmp C p1 s1
restore_cmp C p3 s3
unchanged "reading a chain with an older block"
mount_point_eio C p2 "restore point 'p2': .*seal mismatch"
mount_check C p1 s1
unchanged "mounting a chain with an older block"

# the same rollback of one block done by relabelling p2's entry origin only (record kept):
# the AEAD binds the origin
fresh
icimg_py C/00000002.img <<'EOF'
import sys, icimg
i = icimg.Image(sys.argv[1])
e = i.entry(3)
e["origin"] = 1
i.write_entry(e)
EOF
expect_exit 0 imgverify C
expect_exit 4 imgverify --data C
expect_msg "^imgverify: C/00000002.img: point 'p2', block 3 \(disk bytes 196608..262143\): block 3 \(point seq 1\): authentication failed$"
