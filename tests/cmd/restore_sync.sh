#!/bin/bash
# restore_sync.sh: imgrestore --sync and --sync-from onto regular files.  Onto a copy of an
# older point, onto a copy with random damage, onto nothing (a new file) and an empty file,
# growing and shrinking: DEST ends equal to the point byte for byte, and strace shows that
# exactly the differing blocks were written (zero ones punched), exactly their records read
# from the chain, and that --sync-from never reads DEST.  A damaged record of an equal block
# is never read (the sync passes where a full restore fails); one of a differing block stops
# the sync with exit 4.
source "${top_srcdir:-.}/tests/lib/functions.sh"
source "$top_srcdir/tests/cmd/restore_sync_lib.sh"
requires imgbackup imgrestore strace cmp python3

bs=65536
size1=$((8 * 1048576 + 12345))            # 129 blocks, the last one partial
mkrandom_bytes s1 $size1 one
zero_at s1 $((20 * bs)) $((20 * bs))      # blocks 20..39 zero
expect_exit 0 imgbackup -q --name p1 C s1

cp s1 s2
for b in 3 4 50 77 100 121; do write_at s2 $((b * bs + 7)) 1000 "b$b"; done    # 6 blocks
zero_at s2 $((60 * bs)) $((3 * bs))       # 3 data blocks become zeros
write_at s2 $((25 * bs)) $((2 * bs)) z2   # 2 zero blocks become data
size2=$((10 * 1048576 + 100))             # grown: the old last block and the new ones
truncate -s $size2 s2
write_at s2 $((size1 - 45)) 300000 tail
expect_exit 0 imgbackup -q --name p2 C s2

cp s2 s3
write_at s3 $((10 * bs)) 5 p3
size3=$((6 * 1048576 + 4000))             # shrunk
truncate -s $size3 s3
expect_exit 0 imgbackup -q --name p3 C s3
I1=C/00000001.img I2=C/00000001.img,C/00000002.img I3=C/00000001.img,C/00000002.img,C/00000003.img

# ---- --sync onto a restore of an older point -----------------------------------------------------
expect_exit 0 imgrestore -q C p1 d
cp d before
traced_sync before s2 file "$I2" -- --sync C p2 d
cmp d s2 || fail "--sync onto p1: DEST differs from p2"

# ---- --sync-from: the indexes alone, DEST never read ------------------------------------------
cp s1 d
cp d before
traced_sync before s2 file "$I2" -- -j 3 --sync-from p1 C p2 d
cmp d s2 || fail "--sync-from p1: DEST differs from p2"
# and back (shrinking, a zero block of p1 punched where p2 has data)
cp d before
expect_exit 0 imgrestore --sync-from p2 C p1 d
expect_out "^synced 'p1' to d: .* 129 blocks compared, "
cmp d s1 || fail "--sync-from p2 back to p1: DEST differs from p1"
# DEST that cannot hold POINT0 (another size): refused, untouched
cp s3 d
expect_exit 1 imgrestore --sync-from p1 C p2 d
expect_msg "^imgrestore: d: $size3 bytes, not the size of 'p1' \($size1 bytes\): it does not hold that point \(use --sync\)$"
cmp d s3 || fail "a refused --sync-from changed DEST"
expect_exit 1 imgrestore --sync-from p1 C p2 absent
expect_msg "^imgrestore: absent: No such file or directory$"
[[ ! -e absent ]] || fail "--sync-from created DEST"

# ---- shrinking --------------------------------------------------------------------------------
cp s2 d
traced_sync s2 s3 file "$I3" -- --sync C p3 d
cmp d s3 || fail "--sync p2 -> p3 (shrunk): DEST differs"
cp s2 d
expect_exit 0 imgrestore --sync-from p2 C p3 d
cmp d s3 || fail "--sync-from p2 -> p3 (shrunk): DEST differs"

# ---- random damage ---------------------------------------------------------------------------
cp s2 d
python3 - d <<'EOF'
import random, sys
r = random.Random("damage")
with open(sys.argv[1], "r+b") as f:
    size = f.seek(0, 2)
    for off in [27 * 65536 + 5, 160 * 65536 - 3, size - 10] + [r.randrange(size - 200) for _ in range(6)]:
        f.seek(off)
        f.write(r.randbytes(r.randint(1, 200)))    # some cross a block boundary
    f.seek(61 * 65536 + 100)                       # inside a zero block
    f.write(b"x")
EOF
cp d before
cmp -s d s2 && fail "the damage changed nothing"
traced_sync before s2 file "$I2" -- --sync C p2 d
cmp d s2 || fail "--sync onto damaged p2: DEST differs"
# in sync already: nothing written, nothing read from the chain
traced_sync d s2 file "$I2" -- --sync C p2 d
expect_out " 0 written, 0 zeroed; read from the chain 0 B, written 0 B,"

# ---- onto nothing and onto an empty file ------------------------------------------------------
rm -f d
traced_sync none s2 file "$I2" -- --sync C p2 d
cmp d s2 || fail "--sync onto nothing: DEST differs"
[[ $(stat -c %a d) == 600 ]] || fail "a new DEST is not 0600"
: >d
traced_sync /dev/null s1 file "$I1" -- --sync C p1 d
cmp d s1 || fail "--sync onto an empty file: DEST differs"

# ---- digests rewritten by the storage (not sealed) never hide a difference ----------------------
# block 3 of p2 gets p1's digest for block 3 (a real tag of the bytes DEST holds, under p1's
# one-time key), block 4 a zero digest; DEST holds p1 there: both are still written
cp C/00000002.img saved2
icimg_py C/00000001.img C/00000002.img <<'EOF2'
import sys, icimg
i1, i2 = icimg.Image(sys.argv[1]), icimg.Image(sys.argv[2])
e = i2.entry(3)
e["digest"] = i1.entry(3)["digest"]
i2.write_entry(e)
e = i2.entry(4)
e["digest"] = bytes(16)
i2.write_entry(e)
EOF2
cp s1 d
cp d before
traced_sync before s2 file "$I2" -- --sync C p2 d
cmp d s2 || fail "--sync with replayed digests: DEST differs from p2"
mv saved2 C/00000002.img

# ---- damaged records: equal blocks' never read, a differing block's fails -----------------------
cp s2 d
read -r off len pos < <(image_record_of_pos C/00000002.img 50)
flip_bit C/00000002.img $((off + len / 2))
expect_exit 4 imgrestore -q C p2 full
expect_exit 0 imgrestore --sync C p2 d        # block 50 equal: its record never read
cmp d s2 || fail "--sync with an equal block's record damaged: DEST differs"
write_at d $((50 * bs)) 10 again
expect_exit 4 imgrestore --sync C p2 d
expect_msg "C/00000002.img: restore point 'p2', block 50 "

# ---- usage ------------------------------------------------------------------------------------
expect_exit 2 imgrestore --force --sync C p2 d
expect_msg "^imgrestore: --force replaces DEST; --sync and --sync-from update it$"
