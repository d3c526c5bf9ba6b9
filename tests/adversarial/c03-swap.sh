#!/bin/bash
# c03-swap.sh (doc/SECURITY.md case 3): two records of one image swapped, their entries' kind,
# length, record checksum and digest swapped with them and every checksum fixed.  Keyless imgverify
# passes: the documented limit (doc/SECURITY.md, "Swapping records with keyless tools only").
# Keyed, both blocks fail authentication and the seal fails: imgverify --data, imgrestore and a
# mount refuse p2; p1 and p3, which do not use the swapped records, are unaffected.
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
make_chain

icimg_py C/00000002.img <<'EOF'
import sys, icimg
i = icimg.Image(sys.argv[1])
a, b = i.entry(2), i.entry(9)
for k in ("record", "stored_len", "kind", "rec_hash", "digest"):
    a[k], b[k] = b[k], a[k]
i.write()
EOF
snap
# keyless: sound structure, sound checksums (the documented limit)
expect_exit 0 imgverify C
expect_out "^C: 3 points, 3 images, [0-9]+ records .* checked: no problems$"
expect_exit 4 imgverify --data C
expect_msg "^imgverify: C/00000002.img: point 'p2', block 2 \(disk bytes 131072..196607\): block 2 \(point seq 2\): authentication failed$"
expect_msg "^imgverify: C/00000002.img: point 'p2', block 9 \(disk bytes 589824..655359\): block 9 \(point seq 2\): authentication failed$"
expect_msg "^imgverify: C/00000002.img: restore point 'p2': seal mismatch"
expect_exit 4 imgrestore C p2 out
expect_msg "^imgrestore: C/00000002.img: restore point 'p2': seal mismatch"
[[ ! -e out ]] || fail "a failed restore left DEST"
restore_cmp C p1 s1
restore_cmp C p3 s3
expect_exit 0 imgverify -q --data C p3
unchanged "reading a chain with swapped records"
mount_point_eio C p2 "restore point 'p2': .*seal mismatch"
mount_check C p3 s3
unchanged "mounting a chain with swapped records"
