#!/bin/bash
# c15-nonce.sh (doc/SECURITY.md case 15): encrypting the same block twice gives different
# ciphertexts.  The same source backed up twice as fulls of one chain, two equal blocks inside one
# image, and the same source in a second chain with the same passphrase: every record has its own
# nonce and ciphertext, and the change digests do not reveal equality either.
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
make_chain

# blocks 0 and 1 of s1 made equal, then s1 backed up twice more: into C (full) and into D
dd if=s1 of=s1 bs=$B count=1 seek=1 conv=notrunc status=none
expect_exit 0 imgbackup -q --name again --full C s1
expect_exit 0 imgbackup -q --name again2 --full C s1
expect_exit 0 imgbackup -q --name d1 D s1
restore_cmp C again s1
restore_cmp C again2 s1
icimg_py C/00000004.img C/00000005.img D/00000001.img <<'EOF'
import sys, icimg
imgs = [icimg.Image(p) for p in sys.argv[1:]]
ents = [i.data_entries() for i in imgs]
assert len(set(len(e) for e in ents)) == 1 and len(ents[0]) == 15, [len(e) for e in ents]
records, nonces, digests = set(), set(), set()
for es in ents:
    for e in es:
        records.add(e["record"])
        nonces.add(e["record"][:24])
        digests.add(e["digest"])
n = sum(len(e) for e in ents)
assert len(records) == n, "equal records: %d distinct of %d" % (len(records), n)
assert len(nonces) == n, "a nonce was reused: %d distinct of %d" % (len(nonces), n)
assert len(digests) == n, "equal change digests: %d distinct of %d" % (len(digests), n)
# the two equal blocks of one image
for es in ents:
    a, b = es[0], es[1]
    assert (a["pos"], b["pos"]) == (0, 1) and a["plain_len"] == b["plain_len"]
    assert a["record"][24:] != b["record"][24:], "equal blocks, equal ciphertext"
# the same block, same position, in the three images: three ciphertexts
for p in range(15):
    assert len(set(es[p]["record"][24:] for es in ents)) == 3, "block %d" % es[p]["pos"]
print("%d records, all distinct" % n)
EOF
