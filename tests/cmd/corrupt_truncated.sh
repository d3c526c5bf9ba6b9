#!/bin/bash
# corrupt_truncated.sh: an image truncated in the middle of a record (CRYPTO.md case 6) or inside
# its header is reported as "truncated" with the file's name (exit 4) by imgverify and imginfo;
# restoring it or a point that depends on it fails cleanly with no DEST; every other point still
# restores byte-for-byte.
source "${top_srcdir:-.}/tests/lib/functions.sh"
requires imgbackup imgrestore imginfo imgverify cmp truncate

mkrandom_bytes s1 2000000 one
expect_exit 0 imgbackup -q --name p1 C s1
cp s1 s2
write_at s2 100000 100 two
expect_exit 0 imgbackup -q --name p2 C s2
mkrandom_bytes s3 1500000 three
expect_exit 0 imgbackup -q --name p3 --full C s3
cp s3 s4
write_at s4 1400000 100 four
expect_exit 0 imgbackup -q --name p4 C s4
cp -a C pristine

# ---- cut p1's image in the middle of its fourth record ----------------------------------------
read -r off len pos < <(image_record_offset C/00000001.img 3)
truncate -s $((off + len / 2)) C/00000001.img
tree=$(sha_tree C)

expect_exit 4 imgverify C
expect_msg "^imgverify: C/00000001.img: truncated: $((off + len / 2)) bytes, needs [0-9]+$"
expect_msg "C/00000002.img: point 'p2': its parent \(sequence 1\) is missing or damaged"
expect_msg "^imgverify: C: 2 problems found$"
expect_exit 4 imgverify --data C
expect_msg "C/00000001.img: truncated"

expect_exit 4 imginfo C
expect_out "damaged file: C/00000001.img: truncated"
expect_out "p2 .*\(BROKEN: parent missing\)"
expect_exit 4 imginfo --json C
json_check last.out <<'EOF'
assert [p["name"] for p in j["points"]] == ["p2", "p3", "p4"], j
p2 = j["points"][0]
assert p2["broken"] is True and p2["parent"] is None and p2["parent_seq"] == 1, p2
assert all(p["broken"] is False for p in j["points"][1:]), j
assert len(j["bad_files"]) == 1 and j["bad_files"][0]["file"] == "00000001.img", j
assert "truncated" in j["bad_files"][0]["error"], j
EOF

# a point that depends on the damaged image: a clear error, no DEST
set +e
imgrestore C p2 out 2>last.err
rc=$?
set -e
[[ $rc -eq 4 ]] || fail "imgrestore of a point depending on a truncated image exited $rc, expected 4"
expect_msg "restore point 'p2' cannot be read: its ancestor's image is damaged: .*00000001.img: truncated"
[[ ! -e out ]] || fail "a failed restore left DEST"
no_tmp_files .

# the other points are intact
restore_cmp C p3 s3
restore_cmp C p4 s4
expect_exit 0 imgbackup -q --name p5 C s4
restore_cmp C p5 s4
[[ $(sha_tree C | grep -c 00000001.img) -eq 1 ]] || fail "the damaged image was removed"

# ---- an image cut inside its header -------------------------------------------------------------
rm -rf C "$IMGCHAIN_STATE_DIR"    # (p5 is gone again: no rollback alarm wanted here)
cp -a pristine C
truncate -s 3000 C/00000003.img
expect_exit 4 imgverify C
expect_msg "^imgverify: C/00000003.img: truncated: 3000 bytes, smaller than the header$"
expect_msg "C/00000004.img: point 'p4': its parent \(sequence 3\) is missing or damaged"
restore_cmp C p1 s1
restore_cmp C p2 s2
truncate -s 0 C/00000003.img
expect_exit 4 imgverify C
expect_msg "C/00000003.img: truncated: 0 bytes"

# restoring the truncated point itself: corruption (exit 4) with the file and "truncated"
# named, not "no restore point named 'p3'": the user named a point that exists, damaged
cp pristine/00000003.img C/
truncate -s 100000 C/00000003.img
expect_exit 4 imgrestore C p3 out
expect_msg "C/00000003.img: truncated"
[[ ! -e out ]] || fail "a failed restore left DEST"
