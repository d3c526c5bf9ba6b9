#!/bin/bash
# backup_basic.sh: full, incremental, branch and --full backups of a sparse disk whose size is not
# a multiple of the block size; every point restores byte-for-byte; 4K and 1M block sizes; an
# all-zero disk; default UTC names; a duplicate --name is refused and changes nothing.
source "${top_srcdir:-.}/tests/lib/functions.sh"
requires imgbackup imgrestore imginfo cmp truncate

# ---- a sparse 8 MiB + 12345 byte disk with holes ------------------------------------------------
size=$((8 * 1048576 + 12345))
truncate -s $size disk
write_at disk 0 300000 a                       # blocks 0..4
write_at disk $((2 * 1048576 + 5000)) 200000 b # blocks 32..35
write_at disk $((size - 70000)) 70000 c        # the short last block and the one before it
[[ $(du -k disk | cut -f1) -lt 2048 ]] || fail "test disk is not sparse"
cp --sparse=always disk s1

expect_exit 0 imgbackup --name p1 C disk
expect_out "full point 'p1' \(seq 1\)"
# 5 + 4 + 2 blocks hold data; holes are neither read nor stored
# (10 whole blocks + the 12345-byte last one = 652.1 KiB)
expect_out "disk 8.0 MiB, read 652.1 KiB, changed 652.1 KiB \(11 blocks\)"

# ---- incremental: change, zero, extend into a hole ----------------------------------------------
write_at disk 100 10 d                          # block 0 changes
zero_at disk $((2 * 1048576 + 5000)) 200000     # blocks 32..35 become zeros (written, not holes)
write_at disk $((5 * 1048576)) 65536 e          # block 80, a hole before
cp --sparse=always disk s2
expect_exit 0 imgbackup --name p2 C disk
expect_out "incremental point 'p2' \(seq 2\) based on 'p1'"
# block 32 held only 5000 bytes of hole before the data: all four become zero
expect_out "changed 128.0 KiB \(2 blocks\), zeroed 4 blocks"

# ---- a branch from p1, of another disk --------------------------------------------------------
cp --sparse=always s1 disk3
write_at disk3 $((7 * 1048576)) 4096 f
cp --sparse=always disk3 s3
expect_exit 0 imgbackup --name p3 --parent p1 C disk3
expect_out "based on 'p1'"

# ---- the next incremental follows the newest point (p3), --full makes a full ----------------
write_at disk3 0 65536 g
cp --sparse=always disk3 s4
expect_exit 0 imgbackup --name p4 C disk3
expect_out "based on 'p3'"
expect_exit 0 imgbackup --name p5 --full C disk3
expect_out "full point 'p5'"
imginfo --json C >j5
json_check j5 <<EOF
p = j["points"]
assert [(x["name"], x["kind"], x["parent"]) for x in p] == [("p1", "full", None),
    ("p2", "incremental", "p1"), ("p3", "incremental", "p1"), ("p4", "incremental", "p3"),
    ("p5", "full", None)], p
assert [x["disk_size"] for x in p] == [$size] * 5, p
assert [x["data_blocks"] for x in p] == [11, 2, 1, 1, 12], p
assert [x["zero_blocks"] for x in p] == [0, 4, 0, 0, 0], p
EOF

for p in 1 2 3 4; do
	restore_cmp C p$p s$p
done
restore_cmp C p5 s4
# 'latest' (never a point's name) is the newest point, as the mount's link says
restore_cmp C latest s4
# the restored file is sparse: zero blocks are holes
expect_exit 0 imgrestore C p2 r2
cmp r2 s2
[[ $(du -k r2 | cut -f1) -lt 2048 ]] || fail "restored file is not sparse"
# an existing non-empty DEST is not overwritten without --force
expect_exit 1 imgrestore C p1 r2
expect_msg "r2: exists and is not empty \(use --force"
cmp r2 s2
expect_exit 0 imgrestore --force C p1 r2
cmp r2 s1

# ---- a duplicate --name is refused and changes nothing ----------------------------------------
before=$(sha_tree C)
expect_exit 1 imgbackup --name p2 C disk
expect_msg "a restore point named 'p2' exists already"
[[ $(sha_tree C) == "$before" ]] || fail "a refused backup changed the chain"
no_tmp_files C
expect_exit 2 imgbackup --name .hidden C disk
expect_msg "invalid name"
expect_exit 1 imgbackup --block-size 4K C disk
expect_msg "block size of 65536; --block-size 4096 does not match"
[[ $(sha_tree C) == "$before" ]] || fail "a refused backup changed the chain"

# ---- default names: UTC time, unique --------------------------------------------------------
t0=$(date -u +%s)
expect_exit 0 imgbackup -q C disk
expect_exit 0 imgbackup -q C disk
t1=$(date -u +%s)
mapfile -t names < <(imginfo C | sed -nE 's/^[^0-9A-Za-z]*([0-9]{8}T[0-9]{6}Z[^ ]*) .*/\1/p')
[[ ${#names[@]} -eq 2 ]] || fail "expected two new points: ${names[*]}"
[[ ${names[0]} =~ ^[0-9]{8}T[0-9]{6}Z$ ]] || fail "default name '${names[0]}' is not UTC time"
[[ ${names[1]} =~ ^[0-9]{8}T[0-9]{6}Z(-[0-9]+)?$ ]] || fail "default name '${names[1]}'"
[[ ${names[0]} != "${names[1]}" ]] || fail "default names collide"
t=$(date -u -d "$(sed -E 's/^(....)(..)(..)T(..)(..)(..)Z.*/\1-\2-\3 \4:\5:\6/' <<<"${names[0]}") UTC" +%s)
((t >= t0 - 1 && t <= t1 + 1)) || fail "default name '${names[0]}' is not the current UTC time"

# ---- block sizes 4K and 1M, sizes not multiples of them ---------------------------------------
for bs in 4K 1M; do
	mkrandom_bytes b$bs $((3 * 1048576 + 777)) $bs
	cp b$bs b$bs.1
	expect_exit 0 imgbackup -q --block-size $bs --name one B$bs b$bs
	write_at b$bs 5000 3 x$bs
	write_at b$bs $((3 * 1048576 + 700)) 77 y$bs   # inside the short last block
	cp b$bs b$bs.2
	expect_exit 0 imgbackup -q --name two B$bs b$bs
	imginfo B$bs >info
	grep -q "block size ${bs%?}.0 ${bs#?}iB" info || fail "$bs: $(cat info)"
	grep -Eq "^└─ two +incremental .* 2 +0$" info || fail "$bs: two blocks changed: $(cat info)"
	restore_cmp B$bs one b$bs.1
	restore_cmp B$bs two b$bs.2
done

# ---- an all-zero disk (written zeros, not a hole) -------------------------------------------------
head -c $((16 * 1048576 + 1)) /dev/zero >zeros
expect_exit 0 imgbackup --name z Z zeros
expect_out "stored 0 B, [0-9.]+ s"    # nothing stored: no ratio (not "ratio 0.00")
[[ $LAST_OUT != *ratio* ]] || fail "a ratio of nothing stored: $LAST_OUT"
imginfo Z >info
grep -Eq "^z +full +- .* 0 B +0 +0$" info || fail "all-zero disk stored data: $(cat info)"
expect_exit 0 imgrestore Z z rz
cmp rz zeros
[[ $(du -k rz | cut -f1) -lt 64 ]] || fail "all-zero restore is not sparse"

# ---- a compressible disk is stored smaller; --level 0 stores it raw -------------------------
python3 -c '
import sys
line = b"imgchain compresses text like this line\n"
sys.stdout.buffer.write((line * (4 * 1048576 // len(line) + 1))[:4 * 1048576])' >text
expect_exit 0 imgbackup -q --name t T text
expect_exit 0 imgbackup -q --name t0 --full --level 0 T text
imginfo --json T >jt
json_check jt <<'EOF'
p = j["points"]
assert p[0]["stored_bytes"] < 4 * 1048576 // 10, p[0]
assert p[1]["stored_bytes"] == 4 * 1048576 + 64 * 40, p[1]   # 64 raw blocks + nonce and tag each
EOF
restore_cmp T t text
restore_cmp T t0 text

# ---- a new chain only in an absent or empty directory -------------------------------------------
mkdir -p home/docs
echo "my notes" >home/notes.txt
tree=$(sha_tree home)
expect_exit 1 imgbackup -q home disk
expect_msg "^imgbackup: home: not a chain and not empty \(it holds '(notes.txt|docs)'\): a new chain is only created in an absent or empty directory$"
[[ $(sha_tree home) == "$tree" && $(ls -A home | wc -l) -eq 2 ]] || fail "a refused backup changed the directory"
mkdir empty
expect_exit 0 imgbackup -q --name e empty disk
expect_exit 0 imgbackup -q --name e2 empty disk    # a chain now: the next backup goes in
