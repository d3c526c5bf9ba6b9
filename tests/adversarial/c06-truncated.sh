#!/bin/bash
# c06-truncated.sh (doc/SECURITY.md case 6): an image cut in the middle of a record: a clear
# "truncated: N bytes, needs M" naming the file from imgverify, imginfo, imgrestore and imgmount,
# exit 4, no crash; the points that do not need the file still restore and mount byte-exact;
# nothing is written; imginfo --json lists the bad file; a new backup still works.  The full cut
# mid-record: its dependants are named and marked broken.  Also cut inside the index, inside the
# header and to zero bytes.  (Was also tests/cmd/corrupt_truncated.sh.)
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
make_chain

# p2's image cut in the middle of its second record
read -r off len pos < <(image_record_offset C/00000002.img 1)
cut=$((off + len / 2))
truncate -s $cut C/00000002.img
snap
expect_exit 4 imgverify C
expect_msg "^imgverify: C/00000002.img: truncated: $cut bytes, needs [0-9]+$"
expect_msg "^imgverify: C: 1 problem found$"
expect_clean_rc
expect_exit 4 imgverify --data C
expect_msg "^imgverify: C/00000002.img: truncated: $cut bytes"
expect_exit 4 imginfo C
expect_out "damaged file: C/00000002.img: truncated"
expect_exit 4 imgrestore C p2 out
expect_msg "^imgrestore: C: no readable restore point named 'p2'; 1 damaged file: C/00000002.img: truncated: $cut bytes, needs [0-9]+$"
[[ ! -e out ]] || fail "a failed restore left DEST"
no_tmp_files .
restore_cmp C p1 s1
restore_cmp C p3 s3
unchanged "reading a truncated chain"
if fuse_usable; then
	mount_chain C
	[[ ! -e $TESTDIR/mnt/p2 ]] || fail "the mount serves 'p2' from a truncated image"
	grep -q "C/00000002.img: truncated: $cut bytes" mount.log ||
		fail "imgmount did not report the truncated image: $(cat mount.log)"
	cmp "$TESTDIR/mnt/p1/disk.raw" s1 || fail "mount: p1 differs"
	cmp "$TESTDIR/mnt/p3/disk.raw" s3 || fail "mount: p3 differs"
	_unmount_quiet
fi
unchanged "mounting a truncated chain"
expect_exit 4 imginfo --json C
json_check last.out <<'EOF'
assert [p["name"] for p in j["points"]] == ["p1", "p3"], j
assert all(p["broken"] is False for p in j["points"]), j
assert len(j["bad_files"]) == 1 and j["bad_files"][0]["file"] == "00000002.img", j
assert "truncated" in j["bad_files"][0]["error"], j
EOF
# the chain carries on: a new backup works and the damaged image stays
expect_exit 0 imgbackup -q --name p4 C s2
restore_cmp C p4 s2
[[ -e C/00000002.img ]] || fail "the damaged image was removed"

# p1's image cut in the middle of a record: its dependants are named, imginfo marks them broken
fresh
read -r off len pos < <(image_record_offset C/00000001.img 3)
cut=$((off + len / 2))
truncate -s $cut C/00000001.img
expect_exit 4 imgverify C
expect_msg "^imgverify: C/00000001.img: truncated: $cut bytes, needs [0-9]+$"
expect_msg "C/00000002.img: point 'p2': its parent \(sequence 1\) is missing or damaged"
expect_msg "C/00000003.img: point 'p3': its parent \(sequence 1\) is missing or damaged"
expect_msg "^imgverify: C: 3 problems found$"
expect_exit 4 imginfo C
expect_out "damaged file: C/00000001.img: truncated"
expect_out "p2 .*\(BROKEN: parent missing\)"
expect_exit 4 imginfo --json C
json_check last.out <<'EOF'
assert [p["name"] for p in j["points"]] == ["p2", "p3"], j
for p in j["points"]:
    assert p["broken"] is True and p["parent"] is None and p["parent_seq"] == 1, p
assert len(j["bad_files"]) == 1 and j["bad_files"][0]["file"] == "00000001.img", j
assert "truncated" in j["bad_files"][0]["error"], j
EOF
expect_exit 4 imgrestore C p2 out
expect_msg "restore point 'p2' cannot be read: its ancestor's image is damaged: .*00000001.img: truncated"
[[ ! -e out ]] || fail "a failed restore left DEST"
no_tmp_files .

# cut inside the index (the last bytes of the file): the same
fresh
size=$(stat -c %s C/00000002.img)
truncate -s $((size - 30)) C/00000002.img
expect_exit 4 imgverify C
expect_msg "^imgverify: C/00000002.img: truncated: $((size - 30)) bytes, needs $size$"

# cut inside the header, and to nothing: p1's image, which every point needs
for cut in 3000 0; do
	fresh
	truncate -s $cut C/00000001.img
	snap
	expect_exit 4 imgverify C
	if ((cut > 0)); then
		expect_msg "^imgverify: C/00000001.img: truncated: $cut bytes, smaller than the header$"
	else
		expect_msg "^imgverify: C/00000001.img: truncated: 0 bytes"
	fi
	expect_msg "C/00000002.img: point 'p2': its parent \(sequence 1\) is missing or damaged"
	expect_clean_rc
	expect_exit 4 imgrestore C p3 out
	expect_msg "restore point 'p3' cannot be read: its ancestor's image is damaged: .*00000001.img: truncated"
	[[ ! -e out ]] || fail "a failed restore left DEST"
	unchanged "reading a chain whose full is cut to $cut bytes"
done
