#!/bin/bash
# d02-index-outside.sh (design, FORMAT.md 3.3): an index entry (checksums fixed) whose record
# would lie outside the file, inside the index, inside the first 4096 bytes, past data_end, be
# longer than any record can be, or whose offset is near 2^64 (wrap-around): every reader
# rejects it by bounds before reading ("index entry N (block P): fields out of bounds", exit 4).
# An entry pointing at another entry's record (a copy inside the file) passes the bounds and
# the keyless checks (its checksum is the other record's) and fails authentication.
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
make_chain
img=C/00000002.img

# outside FIELD=VALUE...: set fields of the entry of block 9 (entry 2), fix the checksums
edit_entry()
{
	icimg_py $img "$@" <<'EOF'
import sys, icimg
i = icimg.Image(sys.argv[1])
e = i.entry(9)
for a in sys.argv[2:]:
    k, v = a.split("=")
    e[k] = eval(v, {"i": i, "e": e, "s": i.slot, "os": __import__("os")})
i.write_entry(e)
EOF
}

while read -r what edit; do
	fresh
	edit_entry $edit
	snap
	expect_exit 4 imgverify C
	expect_msg "^imgverify: $img: index entry 2 \(block 9\): fields out of bounds$"
	expect_clean_rc
	expect_exit 4 imgrestore C p2 out
	expect_msg "^imgrestore: $img: index entry 2 \(block 9\): fields out of bounds$"
	[[ ! -e out ]] || fail "$what: a failed restore left DEST"
	mount_point_eio C p2 "$img: index entry 2 \(block 9\): fields out of bounds"
	restore_cmp C p3 s3
	unchanged "an entry $what"
done <<'EOF'
past-the-file offset=os.path.getsize(i.path)+100
across-the-end offset=os.path.getsize(i.path)-100
inside-the-index offset=s["index_offset"]+64
inside-the-header offset=100
offset-near-2^64 offset=2**64-100
longer-than-a-record stored_len=70000
raw-of-wrong-length stored_len=e["stored_len"]-1
EOF

# the entry of block 9 points at block 2's record (with its length and checksum)
fresh
icimg_py $img <<'EOF'
import sys, icimg
i = icimg.Image(sys.argv[1])
e, o = i.entry(9), i.entry(2)
for k in ("offset", "stored_len", "kind", "rec_hash"):
    e[k] = o[k]
i.write_entry(e)
EOF
snap
expect_exit 0 imgverify C
expect_exit 4 imgverify --data C
expect_msg "^imgverify: $img: point 'p2', block 9 \(disk bytes 589824..655359\): block 9 \(point seq 2\): authentication failed$"
unchanged "an entry pointing at another record"
