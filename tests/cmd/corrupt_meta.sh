#!/bin/bash
# corrupt_meta.sh: a flipped bit in an image's fixed header, its current slot or its index, and
# absurd values behind correct checksums (CRYPTO.md cases 7 and 10), are rejected before use:
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

# damaged CAUSE: imgverify and imgrestore of p2 both report it; p1 and p3 still restore
check_damaged()
{
	local cause=$1
	expect_exit 4 imgverify C
	expect_msg "^imgverify: $img: $cause"
	expect_msg "^imgverify: C: [0-9]+ problems? found$"
	expect_exit 4 imgverify --data C
	expect_msg "$img: $cause"
	expect_exit 4 imgrestore C p2 out
	expect_msg "$img: $cause"
	[[ ! -e out ]] || fail "a failed restore left DEST"
	no_tmp_files .
	restore_cmp C p1 s1
	restore_cmp C p3 s3
}

# ---- one bit in the fixed header (block size, chain id, hdr_hash itself) ----------------------
for at in 8 20 60 504; do
	fresh
	flip_bit $img $at
	check_damaged "header checksum mismatch"
	expect_exit 4 imginfo C
	expect_out "damaged file: $img: header checksum mismatch"
done

# ---- one bit in the current slot (seq, disk size, index offset, name, slot_hash) ------------------
for field in 8 40 56 120 1000; do
	fresh
	flip_bit $img $((1024 + field % 512))
	check_damaged "slot checksum mismatch"
	expect_exit 4 imginfo --json C
	expect_out '"file": "00000002.img", "error": ".*slot checksum mismatch"'
done

# ---- one bit in the index: first entry, last entry, an entry_hash -------------------------------
for which in first last hash; do
	fresh
	at=$(icimg_py $img $which <<'EOF'
import sys, icimg
s = icimg.Image(sys.argv[1]).slot
first, n = s["index_offset"], s["index_count"]
print({"first": first, "last": first + 64 * n - 20, "hash": first + 64 * (n - 1) + 60}[sys.argv[2]])
EOF
)
	flip_bit $img $at
	check_damaged "index checksum mismatch"
done

# ---- absurd values behind correct checksums (what a checksum cannot catch) -----------------------
absurd()
{
	fresh
	icimg_py $img "$1" <<'EOF'
import sys, icimg
i = icimg.Image(sys.argv[1])
what = sys.argv[2]
if what == "block_size":
    i.header["block_size"] = 1 << 31
    i.write_header()
elif what == "version":
    i.header["version"] = 99
    i.write_header()
elif what == "index_count":
    i.slot["index_count"] = 1 << 39
    i.write_slot()
elif what == "index_offset":
    i.slot["index_offset"] = 1 << 62
    i.write_slot()
elif what == "parent":
    i.slot["parent_seq"] = i.slot["seq"]
    i.write_slot()
elif what == "disk_size":
    i.slot["disk_size"] = 0
    i.write_slot()
elif what in ("stored_len", "offset", "pos", "plain_len", "origin"):
    e = i.data_entries()[0]
    e[what] = {"stored_len": 0xffffffff, "offset": 1 << 60, "pos": 1 << 40,
               "plain_len": 1 << 30, "origin": 999}[what]
    i.write_entry(e)
EOF
}

absurd block_size
check_damaged "bad block size"
absurd version
check_damaged "unsupported format version 99"
absurd index_count
check_damaged "bad slot: index out of bounds"
absurd index_offset
check_damaged "bad slot: index out of bounds"
absurd parent
check_damaged "bad slot: parent is not older than the point"
absurd disk_size
check_damaged "bad slot: impossible disk size"
for f in stored_len offset pos plain_len origin; do
	absurd $f
	check_damaged "index entry 0 \(block [0-9]+\): fields out of bounds"
done
