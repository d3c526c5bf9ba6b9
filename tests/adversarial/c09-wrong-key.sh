#!/bin/bash
# c09-wrong-key.sh (doc/SECURITY.md case 9): the key file of another chain with the same passphrase:
# the passphrase opens it, the key check does not match the images: "wrong key", exit 3, from
# every keyed tool, before any record is read (a chain whose records are damaged still says
# "wrong key", not a record error) and nothing is written.
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
requires imgkey
make_chain
expect_exit 0 imgbackup -q --name o1 OTHER s1
cp OTHER/imgchain.key C/imgchain.key
# and damage a record of every image: reading any record first would report it instead
for f in C/0000000[123].img; do
	read -r off len pos < <(image_record_offset $f 0)
	flip_bit $f $((off + 50))
done
snap C "$IMGCHAIN_STATE_DIR" OTHER
expect_exit 3 imgrestore C p1 out
expect_msg "^imgrestore: C: wrong key: the key file does not belong to this chain's images$"
expect_no_msg "checksum|block"
[[ ! -e out ]] || fail "imgrestore with a wrong key created DEST"
expect_exit 3 imgverify --data C
expect_msg "^imgverify: C: wrong key"
expect_no_msg "checksum|block"
expect_exit 3 imgbackup --name p4 C s2
expect_msg "^imgbackup: C/imgchain.key: wrong key"
no_tmp_files C
mount_refused 3 "wrong key" C
unchanged "keyed tools with another chain's key file"
# the keyless tools do not use the key file: they see the damage
expect_exit 4 imgverify C
expect_msg "record checksum mismatch"

# the key file's own chain id edited to this chain's (checksum fixed): still the wrong key
rm -rf C && cp -a pristine C
icimg_py C/imgchain.key OTHER/imgchain.key <<'EOF'
import sys, struct, icimg
mine = open(sys.argv[1], "rb").read()
d = bytearray(open(sys.argv[2], "rb").read())
d[16:32] = mine[16:32]
icimg.key_rehash(d)
open(sys.argv[1], "wb").write(d)
EOF
snap
expect_exit 3 imgverify --data C
expect_msg "C/imgchain.key: wrong passphrase|wrong key"
expect_exit 3 imgrestore C p1 out
[[ ! -e out ]] || fail "imgrestore with a wrong key created DEST"
unchanged "keyed tools with a relabelled key file"
