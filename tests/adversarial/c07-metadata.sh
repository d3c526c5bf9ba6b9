#!/bin/bash
# c07-metadata.sh (doc/SECURITY.md case 7): a corrupt header, slot, index or seal is rejected before
# use.  A flipped bit in the fixed header, the current slot or the index (the image's tail, what
# other formats call the footer) is caught by its checksum: imgverify, imginfo and imgrestore
# exit 4 naming the file and the cause, no record is decoded.  A changed seal with the slot's
# checksum fixed passes keyless checks but no keyed tool.  A damaged spare slot is ignored.
# Every time the chain and the state stay unchanged.
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
make_chain
img=C/00000002.img

read -r io ic < <(icimg_py $img <<'EOF'
import sys, icimg
s = icimg.Image(sys.argv[1]).slot
print(s["index_offset"], s["index_count"])
EOF
)

# damaged AT CAUSE WHAT [keyed]: flip a bit of p2's image at AT; every reader names CAUSE (with
# keyed: imgverify --data too, and p3 still restores)
damaged()
{
	fresh
	flip_bit $img "$1" 2
	snap
	expect_exit 4 imgverify C
	expect_msg "^imgverify: $img: $2"
	# one damaged file, one problem (a bad index is not reported again for its point)
	expect_msg "^imgverify: C: 1 problem found$"
	[[ $(grep -c "^imgverify: $img: $2" last.err) -eq 1 ]] || fail "reported more than once: $LAST_ERR"
	expect_clean_rc
	if [[ ${4:-} == keyed ]]; then
		expect_exit 4 imgverify --data C
		expect_msg "^imgverify: $img: $2"
	fi
	if [[ $2 != index* ]]; then
		# imginfo reads headers and slots, not indexes
		expect_exit 4 imginfo C
		expect_out "damaged file: $img: $2"
	fi
	expect_exit 4 imgrestore C p2 out
	expect_msg "^imgrestore: C: no readable restore point named 'p2'; 1 damaged file: $img: $2|^imgrestore: $img: $2"
	[[ ! -e out ]] || fail "a failed restore left DEST"
	[[ ${4:-} != keyed ]] || restore_cmp C p3 s3
	unchanged "reading an image with a bad $3"
}
damaged 16 "header checksum mismatch" "chain id" keyed
damaged 48 "header checksum mismatch" "block size"
damaged $((1024 + 32)) "slot checksum mismatch" "disk size" keyed
damaged $((1024 + 40)) "slot checksum mismatch" "index offset"
damaged $((1024 + 256)) "slot checksum mismatch" "data_end"
damaged $((io + 8)) "index checksum mismatch" "first index entry" keyed
damaged $((io + 64 * ic - 1)) "index checksum mismatch" "last byte of the index"

# a mount does not serve p2 (its index is checked when the point is first opened), serves p3
mount_point_eio C p2 "$img: index checksum mismatch"
mount_check C p3 s3
unchanged "mounting an image with a bad index"

# the seal changed and the slot checksum fixed: keyless checks cannot tell, keyed tools refuse
fresh
icimg_py $img <<'EOF'
import sys, icimg
i = icimg.Image(sys.argv[1])
s = bytearray(i.slot["seal"])
s[0] ^= 1
i.slot["seal"] = bytes(s)
i.write_slot()
EOF
snap
expect_exit 0 imgverify C
expect_exit 4 imgverify --data C
expect_msg "^imgverify: $img: restore point 'p2': seal mismatch \(its block map or metadata was changed\)$"
expect_exit 4 imgrestore C p2 out
expect_msg "seal mismatch"
[[ ! -e out ]] || fail "a failed restore left DEST"
unchanged "reading an image with a changed seal"
mount_point_eio C p2 "restore point 'p2': .*seal mismatch"

# the spare slot B (all zero) overwritten with garbage: not valid, ignored; the point reads
fresh
write_at $img 2048 512 garbage
expect_exit 0 imgverify -q --data C
restore_cmp C p2 s2
# a spare slot with a valid checksum but generation 0 is not current either
fresh
icimg_py $img <<'EOF'
import sys, icimg
i = icimg.Image(sys.argv[1])
s = dict(i.slot)
s["generation"] = 0
s["name"] = b"evil".ljust(128, b"\0")
open(sys.argv[1], "r+b").write(b"")
with open(sys.argv[1], "r+b") as f:
    f.seek(icimg.SLOT_B)
    f.write(icimg.slot_pack(s))
EOF
expect_exit 0 imgverify -q --data C
restore_cmp C p2 s2
