#!/bin/bash
# c01-bitflip.sh (doc/SECURITY.md case 1): one bit flipped in a stored block.  Keyless imgverify
# names the file, point and block (exit 4); imgrestore of a point that needs it fails (exit 4, no
# DEST); a mount returns EIO for exactly that block's byte range and the right bytes everywhere
# else, including the other points; the chain and the key holder's state stay byte-identical.  The
# same for the short last block, in a record's nonce and tag, and for a flip with the record
# checksum fixed (only the AEAD can tell, and the seal).  imgverify restricted to a point, and a
# failed imgrestore --force keeps an existing DEST.  (Was also tests/cmd/corrupt_record.sh.)
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
make_chain

# ---- a bit in the middle of p2's own record of block 2 -------------------------------------------
read -r off len pos < <(image_record_of_pos C/00000002.img 2)
flip_bit C/00000002.img $((off + len / 2)) 3
snap
expect_exit 4 imgverify C
expect_msg "^imgverify: C/00000002.img: point 'p2', block 2 \(disk bytes 131072..196607\): .*record checksum mismatch"
expect_msg "^imgverify: C: 1 problem found$"
expect_exit 4 imgverify --data C
expect_msg "^imgverify: C/00000002.img: point 'p2', block 2 \(disk bytes 131072..196607\): .*record checksum mismatch"
expect_exit 4 imgrestore C p2 out
expect_msg "^imgrestore: C/00000002.img: restore point 'p2', block 2 \(bytes 131072..196607\): .*record checksum mismatch"
[[ ! -e out ]] || fail "a failed restore left DEST"
no_tmp_files .
restore_cmp C p1 s1
restore_cmp C p3 s3
unchanged "reading a damaged chain"
mount_check C p2 s2 2
mount_check C p1 s1
unchanged "mounting a damaged chain"
# keyless consolidation meets the damage and refuses: nothing changed
mv C/imgchain.key key.away
expect_exit 4 env -u IMGCHAIN_PASSPHRASE imgconsolidate -q --merge p1..p2 C
expect_msg "C/00000002.img.*block 2.*record checksum mismatch"
mv key.away C/imgchain.key
unchanged "a refused consolidation"
# imgverify restricted to the damaged point names it; to an undamaged one, or with the key to a
# point that does not need the block, passes
expect_exit 4 imgverify C p2
expect_msg "point 'p2', block 2"
expect_exit 0 imgverify C p1
expect_exit 0 imgverify --data C p3
expect_out "^C: .* authenticated: no problems$"
# a failed restore --force does not destroy an existing DEST either
cp s1 out
expect_exit 4 imgrestore --force C p2 out
cmp out s1 || fail "a failed restore --force changed DEST"
rm out

# ---- the short last block (16960 bytes) of p1: p1 and p3 need it, p2 has its own --------------
fresh
read -r off len pos < <(image_record_of_pos C/00000001.img 15)
flip_bit C/00000001.img $((off + 30)) 0
snap
expect_exit 4 imgverify C
expect_msg "^imgverify: C/00000001.img: point 'p1', block 15 \(disk bytes 983040..999999\): .*record checksum mismatch"
expect_exit 4 imgrestore C p3 out
expect_msg "^imgrestore: C/00000001.img: restore point 'p3', block 15 \(bytes 983040..999999\)"
[[ ! -e out ]] || fail "a failed restore left DEST"
restore_cmp C p2 s2
mount_check C p3 s3 15
mount_check C p2 s2
unchanged "reading a damaged last block"
expect_exit 4 imgrestore C p1 out
expect_msg "^imgrestore: C/00000001.img: restore point 'p1', block 15 "
[[ ! -e out ]] || fail "a failed restore left DEST"

# ---- a bit of the nonce, and of the tag, of p3's record of block 12 --------------------------------
for where in nonce tag; do
	fresh
	read -r off len pos < <(image_record_of_pos C/00000003.img 12)
	[[ $where == nonce ]] && at=$off || at=$((off + len - 1))
	flip_bit C/00000003.img $at 7
	expect_exit 4 imgverify C
	expect_msg "C/00000003.img: point 'p3', block 12 "
	expect_exit 4 imgrestore C p3 out
	[[ ! -e out ]] || fail "a failed restore left DEST"
	restore_cmp C p2 s2
done

# ---- a flipped ciphertext bit with the record checksum fixed: only the key can tell ----------------
fresh
icimg_py C/00000001.img <<'EOF'
import sys, icimg
i = icimg.Image(sys.argv[1])
e = i.entry(5)
r = bytearray(e["record"])
r[100] ^= 0x10
e["record"] = bytes(r)
e["rec_hash"] = icimg.xxh64(r)
i.write()
EOF
snap
expect_exit 0 imgverify C
expect_exit 4 imgverify --data C
expect_msg "^imgverify: C/00000001.img: point 'p1', block 5 \(disk bytes 327680..393215\): block 5 \(point seq 1\): authentication failed$"
expect_exit 4 imgrestore C p2 out
expect_msg "(authentication failed|seal mismatch)"
[[ ! -e out ]] || fail "a failed restore left DEST"
unchanged "reading a chain with a forged record checksum"
