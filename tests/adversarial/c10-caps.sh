#!/bin/bash
# c10-caps.sh (doc/SECURITY.md case 10): absurd KDF parameters in a key file slot and absurd lengths
# in an image header, slot or index entry, each behind a correct checksum: rejected by the caps
# before use (exit 4, the field named), the KDF never runs with them and memory stays bounded (peak
# RSS measured with /usr/bin/time when present: far below the 64 MiB of a real KDF run).
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
make_chain

# keyfile_set OFFSET VALUE: set a little-endian u64 of the key file, fix its checksum
keyfile_set()
{
	icimg_py C/imgchain.key "$1" "$2" <<'EOF'
import sys, struct, icimg
p, off, val = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
d = bytearray(open(p, "rb").read())
struct.pack_into("<Q", d, off, val)
icimg.key_rehash(d)
open(p, "wb").write(d)
EOF
}

# bounded CMD...: CMD (exit 4) peaks below 48 MiB of RSS
bounded()
{
	local rss
	if [[ -x /usr/bin/time ]]; then
		expect_exit 4 /usr/bin/time -o rss.txt -f %M "$@"
		rss=$(tail -1 rss.txt)
		((rss < 49152)) || fail "$*: peak RSS $rss KiB"
	else
		expect_exit 4 "$@"
	fi
	expect_clean_rc
}

# slot 0: opslimit @56, memlimit @64
for c in "56 1099511627776 KDF opslimit 1099511627776 out of range \[1, 64\]" \
	"56 65 KDF opslimit 65 out of range" \
	"56 0 KDF opslimit 0 out of range" \
	"64 4294967296 KDF memlimit 4294967296 out of range \[8192, 2147483648\]" \
	"64 18446744073709551615 KDF memlimit 18446744073709551615 out of range" \
	"64 4096 KDF memlimit 4096 out of range"; do
	read -r off val msg <<<"$c"
	fresh
	keyfile_set $off $val
	snap
	bounded imgverify --data C
	expect_msg "^imgverify: C/imgchain.key: key slot 0: $msg"
	bounded imgrestore C p1 out
	expect_msg "key slot 0: $msg"
	[[ ! -e out ]] || fail "a refused restore created DEST"
	unchanged "a hostile key file"
done

# absurd lengths in the image behind correct checksums: rejected before any allocation of them
img=C/00000002.img
while read -r where field value msg; do
	fresh
	icimg_py $img "$where" "$field" "$value" <<'EOF'
import sys, icimg
i = icimg.Image(sys.argv[1])
where, field, value = sys.argv[2], sys.argv[3], int(sys.argv[4])
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
	snap
	bounded imgverify C
	expect_msg "^imgverify: $img: $msg"
	bounded imgrestore C p2 out
	expect_msg "$img: $msg"
	[[ ! -e out ]] || fail "a refused restore created DEST"
	unchanged "an absurd $where $field"
done <<'EOF'
header block_size 2147483648 bad block size
header block_size 2048 bad block size
header header_size 1073741824 unsupported|bad
slot index_offset 18446744073709551552 bad slot: index out of bounds
slot index_count 549755813888 bad slot: index out of bounds
slot index_count 1099511627777 bad slot
slot disk_size 1152921504606846977 bad slot: impossible disk size
slot data_end 18446744073709551615 truncated|bad slot
entry stored_len 4294967295 index entry 0 \(block [0-9]+\): fields out of bounds
entry plain_len 4294967295 index entry 0 \(block [0-9]+\): fields out of bounds
entry offset 18446744073709551615 index entry 0 \(block [0-9]+\): fields out of bounds
EOF
