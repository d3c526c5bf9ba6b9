#!/bin/bash
# corrupt_meta.sh: a flipped bit in an image's fixed header, its current slot or its index, and
# absurd values behind correct checksums (doc/SECURITY.md cases 7 and 10), are rejected before use:
# imgverify reports the file and the cause with exit 4 and does not crash; imginfo flags a bad
# header or slot; restoring the damaged point fails with exit 4 and no DEST; other points restore.
source "${top_srcdir:-.}/tests/lib/functions.sh"
requires imgbackup imgrestore imginfo imgverify cmp

mkrandom_bytes s1 1000000 one
expect_exit 0 imgbackup -q --name p1 C s1
cp s1 s2
write_at s2 100000 100 two
write_at s2 500000 100 two
expect_exit 0 imgbackup -q --name p2 C s2
mkrandom_bytes s3 300000 three
expect_exit 0 imgbackup -q --name p3 --full C s3
cp -a C pristine
img=C/00000002.img

fresh() { rm -rf C; cp -a pristine C; }

# Each case runs in a subshell, so one failure does not hide the others; the test fails at the
# end if any case failed.
failed=()
case_run()
{
	local name=$1
	shift
	( "$@" ) || failed+=("$name")
}

# check_damaged CAUSE [full]: imgverify and imgrestore of p2 report CAUSE (exit 4); with full,
# also imgverify --data, and p1 and p3 still restore (the costly part: once per kind of damage)
check_damaged()
{
	local cause=$1
	expect_exit 4 imgverify C
	expect_msg "^imgverify: $img: $cause"
	expect_msg "^imgverify: C: [0-9]+ problems? found$"
	expect_exit 4 imgrestore C p2 out
	expect_msg "$img: $cause"
	[[ ! -e out ]] || fail "a failed restore left DEST"
	no_tmp_files .
	[[ ${2:-} == full ]] || return 0
	expect_exit 4 imgverify --data C
	expect_msg "$img: $cause"
	restore_cmp C p1 s1
	restore_cmp C p3 s3
}

# ---- one bit in the fixed header (block size, chain id, hdr_hash itself) ----------------------
header_flip()
{
	fresh
	flip_bit $img $1
	check_damaged "header checksum mismatch" ${2:-}
	expect_exit 4 imginfo C
	expect_out "damaged file: $img: header checksum mismatch"
}
case_run "header bit 8" header_flip 8 full
for at in 20 60 504; do
	case_run "header bit $at" header_flip $at
done

# ---- one bit in the current slot (seq, disk size, index offset, name, slot_hash) ------------------
slot_flip()
{
	fresh
	flip_bit $img $((1024 + $1))
	check_damaged "slot checksum mismatch" ${2:-}
	expect_exit 4 imginfo --json C
	expect_out '"file": "00000002.img", "error": ".*slot checksum mismatch"'
}
case_run "slot bit 8" slot_flip 8 full
for at in 40 56 120 504; do
	case_run "slot bit $at" slot_flip $at
done

# ---- one bit in the index: first entry, last entry, an origin_id (v1: entry_hash) -------------
# Every damaged variant of p2's image is made up front by one python3 run (it starts slowly):
# variants/WHAT.img, and the index's offset and entry count in index.txt.
mkdir variants
icimg_py pristine/00000002.img variants <<'EOF'
import shutil, sys, icimg
src, out = sys.argv[1], sys.argv[2]
s = icimg.Image(src).slot
open(out + "/index.txt", "w").write("%d %d\n" % (s["index_offset"], s["index_count"]))
cases = {
    "block_size": ("header", "block_size", 1 << 31),
    "version": ("header", "version", 99),
    "index_count": ("slot", "index_count", 1 << 39),
    "index_offset": ("slot", "index_offset", 1 << 62),
    "parent": ("slot", "parent_seq", s["seq"]),
    "disk_size": ("slot", "disk_size", 0),
    "stored_len": ("entry", "stored_len", 0xffffffff),
    "offset": ("entry", "offset", 1 << 60),
    "pos": ("entry", "pos", 1 << 40),
    "plain_len": ("entry", "plain_len", 1 << 30),
    "origin": ("entry", "origin", 999),
}
for name, (where, field, value) in cases.items():
    path = "%s/%s.img" % (out, name)
    shutil.copyfile(src, path)
    i = icimg.Image(path)
    if where == "header":
        i.header[field] = value
        i.write_header()
    elif where == "slot":
        i.slot[field] = value
        i.write_slot()
    else:
        e = i.data_entries()[0]
        e[field] = value
        i.write_entry(e)
EOF
read -r index_offset index_count <variants/index.txt

index_flip()
{
	fresh
	flip_bit $img $1
	check_damaged "index checksum mismatch" ${2:-}
}
case_run "index bit (first)" index_flip $index_offset full
case_run "index bit (last)" index_flip $((index_offset + 64 * index_count - 20))
case_run "index bit (origin_id)" index_flip $((index_offset + 64 * (index_count - 1) + 60))

# ---- absurd values behind correct checksums (what a checksum cannot catch) -----------------------
absurd() { fresh; cp "variants/$1.img" $img; }

absurd_case() { absurd "$1" && check_damaged "$2" ${3:-}; }
case_run "header block_size" absurd_case block_size "bad block size" full
case_run "header version" absurd_case version "unsupported format version 99"
case_run "slot index_count" absurd_case index_count "bad slot: index out of bounds" full
case_run "slot index_offset" absurd_case index_offset "bad slot: index out of bounds"
case_run "slot parent_seq" absurd_case parent "bad slot: parent is not older than the point"
case_run "slot disk_size" absurd_case disk_size "bad slot: impossible disk size"
case_run "entry stored_len" absurd_case stored_len \
	"index entry 0 \(block [0-9]+\): fields out of bounds" full
for f in offset pos plain_len origin; do
	case_run "entry $f" absurd_case $f "index entry 0 \(block [0-9]+\): fields out of bounds"
done

# ---- a new backup never replaces a damaged image ---------------------------------------------
# p3 (sequence 3, the newest) is damaged; a machine that never saw the chain backs up again: the
# new point must take a fresh sequence, and the damaged file (one bit away from sound) must stay
newest_damaged()
{
	local before
	fresh
	flip_bit C/00000003.img 20
	before=$(sha256sum <C/00000003.img)
	IMGCHAIN_STATE_DIR=$TESTDIR/state-other expect_exit 0 imgbackup --name p4 C s2
	[[ $(sha256sum <C/00000003.img) == "$before" ]] ||
		fail "imgbackup replaced the damaged image 00000003.img"
	[[ $(find C -name '*.img' | wc -l) -eq 4 ]] || fail "expected 4 images: $(ls C)"
	IMGCHAIN_STATE_DIR=$TESTDIR/state-other restore_cmp C p4 s2
}
case_run "backup after the newest image is damaged" newest_damaged

((${#failed[@]} == 0)) || fail "${#failed[@]} cases failed: $(printf '[%s] ' "${failed[@]}")"
