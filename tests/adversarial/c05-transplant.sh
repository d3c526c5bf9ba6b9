#!/bin/bash
# c05-transplant.sh (doc/SECURITY.md case 5): a record of another chain made with the same
# passphrase (same block position, same origin sequence) put into p1 with its entry fields and
# checksums: the AEAD's additional data binds the chain id, so authentication fails; the other
# chain's whole image put into this chain is refused by its chain id.
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
make_chain

cp s1 other
write_at other $((6 * B)) 100 other
expect_exit 0 imgbackup -q --name o1 OTHER other
icimg_py C/00000001.img OTHER/00000001.img <<'EOF'
import sys, icimg
mine, theirs = icimg.Image(sys.argv[1]), icimg.Image(sys.argv[2])
e, t = mine.entry(6), theirs.entry(6)
for k in ("record", "stored_len", "kind", "rec_hash", "digest"):
    e[k] = t[k]
mine.write()
EOF
snap
expect_exit 0 imgverify C
expect_exit 4 imgverify --data C
expect_msg "^imgverify: C/00000001.img: point 'p1', block 6 \(disk bytes 393216..458751\): block 6 \(point seq 1\): authentication failed$"
expect_exit 4 imgrestore C p1 out
expect_msg "(authentication failed|seal mismatch)"
[[ ! -e out ]] || fail "a failed restore left DEST"
unchanged "reading a chain with a transplanted record"
mount_point_eio C p1 "restore point 'p1': .*seal mismatch"
unchanged "mounting a chain with a transplanted record"

# the other chain's whole image dropped in as a fourth point: not of this chain
fresh
cp OTHER/00000001.img C/00000004.img
snap
expect_exit 4 imgverify C
expect_msg "^imgverify: C/00000004.img: belongs to another chain \(chain id differs\)$"
expect_exit 4 imgverify --data C
expect_msg "C/00000004.img: belongs to another chain"
restore_cmp C p2 s2
unchanged "reading a chain with a foreign image"
