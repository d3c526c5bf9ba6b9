#!/bin/bash
# d05-digest.sh (design, FORMAT.md 4.3): the change digests are neither sealed nor authenticated
# (only imgbackup uses them, to decide whether a block changed).  A forged digest cannot make a
# changed block look unchanged without the digest key; a damaged one only makes the next backup
# store that block again: p2's digest of block 2 zeroed (checksums fixed) passes keyless and keyed
# verification, and the next incremental of the same data stores exactly that block and restores
# byte-exact.
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
make_chain
icimg_py C/00000002.img <<'EOF'
import sys, icimg
i = icimg.Image(sys.argv[1])
e = i.entry(2)
e["digest"] = bytes(16)
i.write_entry(e)
EOF
expect_exit 0 imgverify -q C
expect_exit 0 imgverify -q --data C
expect_exit 0 imgbackup --name p4 --parent p2 C s2
expect_out "changed 64.0 KiB \(1 blocks\)"
icimg_py C/00000004.img <<'EOF'
import sys, icimg
assert [e["pos"] for e in icimg.Image(sys.argv[1]).data_entries()] == [2]
EOF
restore_cmp C p4 s2
# and with the digests intact nothing is stored again
expect_exit 0 imgbackup --name p5 --parent p4 C s2
expect_out "changed 0 B \(0 blocks\)"
