#!/bin/bash
# d01-seal-replay.sh (design, FORMAT.md 5): a point's seal replaced by another seal of the same
# chain, the slot checksum fixed: p1's seal on p2, and p1's seal with p1's name, time and disk
# size (everything but the block map).  A seal binds the point's seq, name, time, size and whole
# block map, so every keyed tool refuses the point ("seal mismatch", exit 4) while keyless checks
# pass; the other points stay usable; nothing is written.
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
make_chain

for how in seal-only all-metadata; do
	fresh
	icimg_py C/00000002.img C/00000001.img $how <<'EOF'
import sys, icimg
mine, old = icimg.Image(sys.argv[1]), icimg.Image(sys.argv[2])
keys = ["seal"] + (["name", "created", "disk_size"] if sys.argv[3] == "all-metadata" else [])
for k in keys:
    mine.slot[k] = old.slot[k]
mine.slot["name"] = b"p2x".ljust(128, b"\0") if sys.argv[3] == "all-metadata" else mine.slot["name"]
mine.write_slot()
EOF
	name=p2
	[[ $how == seal-only ]] || name=p2x
	snap
	expect_exit 0 imgverify C
	expect_exit 4 imgverify --data C
	expect_msg "^imgverify: C/00000002.img: restore point '$name': seal mismatch \(its block map or metadata was changed\)$"
	expect_msg "^imgverify: C: 1 problem found$"
	expect_exit 4 imgrestore C $name out
	expect_msg "^imgrestore: C/00000002.img: restore point '$name': seal mismatch"
	[[ ! -e out ]] || fail "a failed restore left DEST"
	expect_exit 4 imgbackup -q --parent $name --name p4 C s2
	expect_msg "seal mismatch"
	no_tmp_files C
	restore_cmp C p3 s3
	unchanged "a replayed seal ($how)"
done
mount_point_eio C p2x "restore point 'p2x': .*seal mismatch"
mount_check C p1 s1

# the seq relabelled (p3 as sequence 5): the seal binds the seq
fresh
icimg_py C/00000003.img <<'EOF'
import sys, icimg
i = icimg.Image(sys.argv[1])
i.slot["seq"] = 5
i.write_slot()
EOF
expect_exit 0 imgverify C
expect_exit 4 imgverify --data C
expect_msg "^imgverify: C/00000003.img: restore point 'p3': seal mismatch"
