#!/bin/bash
# verify.sh: a clean chain verifies keyless and with --data (the summary lines, --quiet), and
# NAME restricts the check to the point and its ancestors.  The tampering cases of doc/SECURITY.md
# (cases 2-5 and 15: a position changed, records swapped, an older block, a transplanted record,
# nonces) are tests/adversarial/c02-c05 and c15, which assert more of each.
source "${top_srcdir:-.}/tests/lib/functions.sh"
requires imgbackup imgverify

bs=65536
mkrandom_bytes s1 $((16 * bs)) one
expect_exit 0 imgbackup -q --name p1 C s1
cp s1 s2
for b in 2 3 6 7 9; do write_at s2 $((b * bs + 7)) 100 two$b; done
expect_exit 0 imgbackup -q --name p2 C s2
cp s1 s3
write_at s3 $((12 * bs)) 100 three
expect_exit 0 imgbackup -q --name p3 --parent p1 C s3

# ---- clean --------------------------------------------------------------------------------------
expect_exit 0 imgverify C
expect_out "^C: 3 points, 3 images, 22 records \([0-9.]+ [KM]iB\) checked: no problems$"
expect_exit 0 imgverify --data C
expect_out "^C: 3 points, 3 images, 22 records \([0-9.]+ [KM]iB\) authenticated: no problems$"
expect_exit 0 imgverify -q --data C
[[ -z $LAST_OUT && -z $LAST_ERR ]] || fail "--quiet printed something"

# ---- NAME restricts: damage in p2 does not concern p3 or p1 -------------------------------------
read -r off len pos < <(image_record_of_pos C/00000002.img 9)
flip_bit C/00000002.img $((off + 50))
expect_exit 0 imgverify C p3
expect_out "^C: 1 point, 2 images, 17 records .* checked: no problems$"
expect_exit 0 imgverify --data C p1
expect_exit 4 imgverify C p2
expect_msg "point 'p2', block 9"
expect_exit 4 imgverify C
