#!/bin/bash
# verify.sh: a clean chain verifies keyless and with --data; NAME restricts the check to the
# point and its ancestors; and the adversarial cases of CRYPTO.md that checksums cannot catch,
# made with every checksum fixed up so that only the key can tell:
#   2. a block's position changed in its index entry      -> authentication fails
#   3. two records swapped                                 -> keyless may pass, --data fails
#   4. a block replaced by the parent's older version     -> --data fails (seal)
#   5. a record transplanted from another chain, same passphrase -> authentication fails
#  15. the same block encrypted twice gives two ciphertexts (fresh random nonces)
source "${top_srcdir:-.}/tests/lib/functions.sh"
requires imgbackup imgrestore imgverify cmp

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
cp -a C pristine
fresh() { rm -rf C; cp -a pristine C; }

# ---- NAME restricts: damage in p2 does not concern p3 or p1 -------------------------------------
read -r off len pos < <(image_record_of_pos C/00000002.img 9)
flip_bit C/00000002.img $((off + 50))
expect_exit 0 imgverify C p3
expect_out "^C: 1 points?, 2 images, 17 records .* checked: no problems$"
expect_exit 0 imgverify --data C p1
expect_exit 4 imgverify C p2
expect_msg "point 'p2', block 9"
expect_exit 4 imgverify C
fresh

# ---- case 2: an entry's position changed (block 9 relabelled as block 10), checksums fixed ------
icimg_py C/00000002.img <<'EOF'
import sys, icimg
i = icimg.Image(sys.argv[1])
e = i.entry(9)
e["pos"] = 10
i.write_entry(e)
EOF
expect_exit 0 imgverify C
expect_exit 4 imgverify --data C
expect_msg "^imgverify: C/00000002.img: point 'p2', block 10 \(disk bytes 655360..720895\): block 10 \(point seq 2\): authentication failed$"
expect_exit 4 imgrestore C p2 out
expect_msg "(authentication failed|seal mismatch)"
[[ ! -e out ]] || fail "a failed restore left DEST"
fresh

# ---- case 3: records of blocks 2 and 6 swapped, every checksum fixed -----------------------------
icimg_py C/00000002.img <<'EOF'
import sys, icimg
i = icimg.Image(sys.argv[1])
a, b = i.entry(2), i.entry(6)
for k in ("record", "stored_len", "kind", "rec_hash", "digest"):
    a[k], b[k] = b[k], a[k]
i.write()
EOF
# keyless: structure and checksums are sound, so this may pass (documented in SECURITY.md)
expect_exit 0 imgverify C
expect_exit 4 imgverify --data C
expect_msg "C/00000002.img: point 'p2', block 2 .*authentication failed"
expect_msg "C/00000002.img: point 'p2', block 6 .*authentication failed"
expect_msg "C/00000002.img: restore point 'p2': seal mismatch"
expect_exit 4 imgrestore C p2 out
[[ ! -e out ]] || fail "a failed restore left DEST"
restore_cmp C p3 s3
fresh

# ---- case 4: p2's block 3 replaced by p1's older version of block 3 (record and entry) ----------
icimg_py C/00000002.img C/00000001.img <<'EOF'
import sys, icimg
new, old = icimg.Image(sys.argv[1]), icimg.Image(sys.argv[2])
e, o = new.entry(3), old.entry(3)
for k in ("record", "stored_len", "plain_len", "origin", "kind", "rec_hash", "digest"):
    e[k] = o[k]
new.write()
EOF
expect_exit 0 imgverify C
# the old record is authentic for (block 3, origin 1): only the seal of p2 can tell
expect_exit 4 imgverify --data C
expect_msg "^imgverify: C/00000002.img: restore point 'p2': seal mismatch \(its block map or metadata was changed\)$"
expect_exit 4 imgrestore C p2 out
expect_msg "seal mismatch"
[[ ! -e out ]] || fail "a failed restore left DEST"
# and a backup based on the tampered point refuses it too
expect_exit 4 imgbackup --parent p2 C s2
expect_msg "seal mismatch"
restore_cmp C p1 s1
fresh

# ---- case 5: a record transplanted from another chain with the same passphrase ------------------
cp s1 other
write_at other $((7 * bs)) 100 other
expect_exit 0 imgbackup -q --name o1 OTHER other
icimg_py C/00000002.img OTHER/00000001.img <<'EOF'
import sys, icimg
mine, theirs = icimg.Image(sys.argv[1]), icimg.Image(sys.argv[2])
e, t = mine.entry(7), theirs.entry(7)
for k in ("record", "stored_len", "kind", "rec_hash", "digest"):
    e[k] = t[k]
mine.write()
EOF
expect_exit 0 imgverify C
expect_exit 4 imgverify --data C
expect_msg "C/00000002.img: point 'p2', block 7 .*authentication failed"
expect_exit 4 imgrestore C p2 out
expect_msg "(authentication failed|seal mismatch)"
[[ ! -e out ]] || fail "a failed restore left DEST"
fresh

# ---- case 15: the same data backed up twice gives different records ----------------------------
expect_exit 0 imgbackup -q --name again --full C s1
icimg_py C/00000001.img C/00000004.img <<'EOF'
import sys, icimg
a, b = icimg.Image(sys.argv[1]), icimg.Image(sys.argv[2])
assert len(a.data_entries()) == len(b.data_entries()) == 16
for x, y in zip(a.data_entries(), b.data_entries()):
    assert x["pos"] == y["pos"] and x["plain_len"] == y["plain_len"]
    assert x["record"][:24] != y["record"][:24], "nonce reused for block %d" % x["pos"]
    assert x["record"][24:] != y["record"][24:], "same ciphertext for block %d" % x["pos"]
    # the keyed change digest is bound to the origin point: no equality leaks across points
    assert x["digest"] != y["digest"], "digest equal for block %d" % x["pos"]
EOF
expect_exit 0 imgverify --data C
