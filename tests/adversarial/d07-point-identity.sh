#!/bin/bash
# d07-point-identity.sh (design, FORMAT.md 1, 3.2, 7): what names a point.  A file's name is only a
# hint: an image renamed still serves its point; a byte-identical copy under another name claims
# the same sequence and is ignored (same content, same seal).  The slot is the authority: a point
# renamed in its slot, or one of two points given the other's name, or a point re-parented so that
# its block map changes: keyless checks see only the duplicate name; with the key the seal
# refuses the rest.  Nothing is written.
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
make_chain

# renamed file; a copy under another name
mv C/00000002.img C/00000009.img
expect_exit 0 imgverify -q --data C
restore_cmp C p2 s2
fresh
cp C/00000002.img C/00000007.img
expect_exit 0 imgverify -q --data C
[[ $(point_count C) -eq 3 ]] || fail "a copy of an image added a point"
restore_cmp C p2 s2

slot_set()
{
	local f=$1
	shift
	icimg_py "$f" "$@" <<'EOF'
import sys, icimg
i = icimg.Image(sys.argv[1])
for a in sys.argv[2:]:
    k, v = a.split("=")
    i.slot[k] = v.encode().ljust(128, b"\0") if k == "name" else int(v)
i.write_slot()
EOF
}

# renamed in its slot
fresh
slot_set C/00000002.img name=monday
snap
expect_exit 0 imgverify C
expect_exit 4 imgverify --data C
expect_msg "^imgverify: C/00000002.img: restore point 'monday': seal mismatch"
expect_exit 4 imgrestore C monday out
[[ ! -e out ]] || fail "a failed restore left DEST"
unchanged "a point renamed in its slot"

# two points named p1
fresh
slot_set C/00000003.img name=p1
snap
expect_exit 4 imgverify C
expect_msg "^imgverify: C: two points are named 'p1'$"
unchanged "two points with one name"

# p3 re-parented onto p2: its block map now includes p2's blocks
fresh
slot_set C/00000003.img parent_seq=2
snap
expect_exit 0 imgverify C
expect_exit 4 imgverify --data C
expect_msg "^imgverify: C/00000003.img: restore point 'p3': seal mismatch"
expect_exit 4 imgrestore C p3 out
[[ ! -e out ]] || fail "a failed restore left DEST"
unchanged "a re-parented point"
