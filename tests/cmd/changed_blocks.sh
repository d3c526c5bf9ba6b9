#!/bin/bash
# changed_blocks.sh: --changed-blocks FILE reads only the listed ranges (plus the parent's last
# block, whose length may change).  Listing exactly the changed byte ranges gives a restore
# identical to the source while reading little; listing nothing gives the parent's content even
# though the source changed, which proves that unlisted ranges are not read.
source "${top_srcdir:-.}/tests/lib/functions.sh"
requires imgbackup imgrestore cmp

bs=65536
size=$((16 * 1048576))               # 256 blocks
mkrandom s1 16 one
expect_exit 0 imgbackup -q --name p1 C s1
expect_exit 0 imgbackup --name p1b --full C s1
full_read=$(summary_bytes read)
[[ $full_read -ge $size ]] || fail "a full backup read $full_read bytes"

# ---- changes at unaligned offsets, one across a block boundary -----------------------------------
cp s1 s2
write_at s2 1000000 100 a                 # inside block 15
write_at s2 $((5 * bs - 10)) 70000 b      # blocks 4, 5 and 6
write_at s2 $((200 * bs)) 1 c             # one byte of block 200
cat >cb <<EOF
# offset length, in bytes, as a dirty bitmap or CBT would give
1000000 100
$((5 * bs - 10)) 70000
$((200 * bs)) 1
EOF
expect_exit 0 imgbackup --name p2 --parent p1 --changed-blocks cb C s2
expect_out "changed 320.0 KiB \(5 blocks\)"
read2=$(summary_bytes read)
# the 5 listed blocks and the parent's last block, nothing else
[[ $read2 -le $((6 * bs)) ]] || fail "--changed-blocks read $read2 bytes, more than 6 blocks"
restore_cmp C p2 s2

# ---- listing nothing: the source's changes are not seen -------------------------------------
cp s2 s3
write_at s3 $((100 * bs)) $bs d           # block 100 changes, but is not listed
printf '# nothing changed, says the tracker\n' >empty.cb
expect_exit 0 imgbackup --name p3 --parent p2 --changed-blocks empty.cb C s3
expect_out "changed 0 B \(0 blocks\)"
[[ $(summary_bytes read) -le $bs ]] || fail "an empty list read more than the last block"
restore_cmp C p3 s2
cmp -s s2 s3 && fail "the source did not change"

# ---- a listed range that did not change stores nothing -------------------------------------
printf '%s %s\n' $((50 * bs)) $((4 * bs)) >same.cb
expect_exit 0 imgbackup --name p4 --parent p2 --changed-blocks same.cb C s2
expect_out "read 320.0 KiB, changed 0 B \(0 blocks\)"
restore_cmp C p4 s2

# ---- the parent's last block is always read: a change there is seen unlisted -----------------
cp s2 s5
write_at s5 $((size - 10)) 10 e
expect_exit 0 imgbackup --name p5 --parent p2 --changed-blocks empty.cb C s5
expect_out "changed 64.0 KiB \(1 blocks?\)"
restore_cmp C p5 s5

# ---- numbers: zero-padded decimal stays decimal, 0x is hexadecimal ---------------------------
cp s2 s6
write_at s6 6553600 10 f                  # block 100; read as octal, "0006553600" would be block 26
write_at s6 $((0x8C0000)) 4 g             # block 140
printf '0006553600 10\n0x8C0000 0x4\n' >nums.cb
expect_exit 0 imgbackup --name p6 --parent p2 --changed-blocks nums.cb C s6
expect_out "changed 128.0 KiB \(2 blocks\)"
restore_cmp C p6 s6

# ---- without a parent the list is ignored, with a warning -------------------------------------
expect_exit 0 imgbackup --name n1 --changed-blocks empty.cb NEW s2
expect_msg "warning: no parent point: --changed-blocks ignored, reading the whole source"
restore_cmp NEW n1 s2
expect_exit 0 imgverify -q --data C
