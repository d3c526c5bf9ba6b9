#!/bin/bash
# d04-geometry.sh (design, FORMAT.md 2, 3.1): the geometry changed behind correct checksums.  One
# image's block size differs from the chain's; every image's block size changed alike; an unknown
# cipher or compression ("unsupported header fields"); p3's disk size one byte longer, and
# without its last block.  Keyless checks reject what the structure shows; the seal and the map
# catch the rest with the key.  Exit 4 every time, nothing written.
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
make_chain

header_set()
{
	local f=$1
	shift
	icimg_py "$f" "$@" <<'EOF'
import sys, icimg
i = icimg.Image(sys.argv[1])
for a in sys.argv[2:]:
    k, v = a.split("=")
    i.header[k] = int(v)
i.write_header()
EOF
}

# one image at 32 KiB
header_set C/00000002.img block_size=32768
snap
expect_exit 4 imgverify C
expect_msg "^imgverify: C/00000002.img: block size 32768 differs from the chain's 65536$"
expect_exit 4 imgrestore C p2 out
expect_msg "C/00000002.img: block size 32768 differs"
[[ ! -e out ]] || fail "a failed restore left DEST"
restore_cmp C p3 s3
unchanged "an image with another block size"

# every image at 131072: the entries no longer fit the geometry
fresh
for f in C/0000000[123].img; do header_set $f block_size=131072; done
snap
expect_exit 4 imgverify C
expect_msg "^imgverify: C/00000001.img: index entry [0-9]+ \(block [0-9]+\): fields out of bounds$"
expect_exit 4 imgrestore C p1 out
[[ ! -e out ]] || fail "a failed restore left DEST"
unchanged "a chain with another block size"

# unknown cipher, unknown compression
for field in cipher compress; do
	fresh
	header_set C/00000002.img $field=2
	expect_exit 4 imgverify C
	expect_msg "^imgverify: C/00000002.img: unsupported header fields$"
done

# p3's disk one byte longer: p1's last block no longer fits p3's geometry, found walking p3's
# map (keyless imgverify walks every point's entries too: issue 10)
fresh
icimg_py C/00000003.img <<'EOF'
import sys, icimg
i = icimg.Image(sys.argv[1])
i.slot["disk_size"] += 1
i.write_slot()
EOF
snap
expect_exit 4 imgverify C
expect_msg "^imgverify: C/00000001.img: block 15: index disagrees with the map$"
expect_exit 4 imgverify --data C
expect_msg "^imgverify: C/00000001.img: block 15: index disagrees with the map$"
expect_exit 4 imgrestore C p3 out
[[ ! -e out ]] || fail "a failed restore left DEST"
unchanged "a point one byte longer"

# p3's disk without its short last block: every entry still fits, only the seal binds the size
fresh
icimg_py C/00000003.img <<'EOF'
import sys, icimg
i = icimg.Image(sys.argv[1])
i.slot["disk_size"] = 15 * 65536
i.write_slot()
EOF
snap
expect_exit 0 imgverify C
expect_exit 4 imgverify --data C
expect_msg "^imgverify: C/00000003.img: restore point 'p3': seal mismatch"
expect_exit 4 imgrestore C p3 out
[[ ! -e out ]] || fail "a failed restore left DEST"
unchanged "a point without its last block"
