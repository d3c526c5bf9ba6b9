#!/bin/bash
# d03-same-chain-record.sh (design, FORMAT.md 4.2): a record of another point of the same chain,
# at the same position, put into p3's entry of block 12 (the record's length, kind and checksum
# with it).  Under p3's origin the AEAD fails (the origin is in the additional data); relabelled
# with its true origin (1, and p1's point id) it is authentic, and only p3's seal can tell.
# Keyless checks pass both; keyed tools refuse; nothing is written.
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
make_chain

for origin in keep true; do
	fresh
	icimg_py C/00000003.img C/00000001.img $origin <<'EOF'
import sys, icimg
mine, other = icimg.Image(sys.argv[1]), icimg.Image(sys.argv[2])
e, o = mine.entry(12), other.entry(12)
for k in ("record", "stored_len", "kind", "rec_hash", "digest"):
    e[k] = o[k]
if sys.argv[3] == "true":
    e["origin"], e["origin_id"] = o["origin"], o["origin_id"]
mine.write()
EOF
	snap
	expect_exit 0 imgverify C
	expect_exit 4 imgverify --data C
	if [[ $origin == keep ]]; then
		expect_msg "^imgverify: C/00000003.img: point 'p3', block 12 \(disk bytes 786432..851967\): block 12 \(point seq 3\): authentication failed$"
	else
		expect_no_msg "authentication failed"
	fi
	expect_msg "^imgverify: C/00000003.img: restore point 'p3': seal mismatch"
	expect_exit 4 imgrestore C p3 out
	expect_msg "seal mismatch|authentication failed"
	[[ ! -e out ]] || fail "a failed restore left DEST"
	restore_cmp C p2 s2
	unchanged "a record of p1 in p3 (origin: $origin)"
done
mount_point_eio C p3 "restore point 'p3': .*seal mismatch"
mount_check C p2 s2
