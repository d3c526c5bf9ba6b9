#!/bin/bash
# e05-seq-reuse.sh (issue 10, finding 5; FORMAT.md "Versions"): a sequence number used again.
# p3 (seq 3) is deleted by the storage and the rollback accepted: the next backup, p4, is seq 3
# again.  In format v2 each point has its own random point id, bound into its records' additional
# data, its change digests' one-time keys and its seal, so nothing of p3 counts for p4:
#  1. p4's point id and its entries' origin_id differ from p3's (and its digests from p3's);
#  2. p3's record of block 12 planted into p4's entry 12 (checksums fixed): with p4's point id the
#     AEAD fails, and imgverify --data names block 12; with p3's id kept the entry is refused
#     keyless (a point's own entries carry its id); p4's seal refuses both, so imgrestore and
#     imgmount never serve p4 (v1: the record authenticated, only the seal caught it);
#  3. p3's change digest of block 12 put into p4's entry: the next backup of p3's data does not
#     take p4's block for it (v1: the digests shared a one-time key, the backup inherited p4's
#     block and restored wrong bytes, exit 0);
#  4. a v1 chain (tests/golden/v1) still verifies and restores, takes a v1 incremental and, in
#     the same directory, a new v2 full; consolidation merges each tree in its own version; a
#     point whose parent has the other version is refused.
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
make_chain
cp -a C deleted                       # the storage's copy of p3, before it deletes it
rm C/00000003.img
cp s1 s4
write_at s4 $((12 * B + 5)) 100 four  # p4: block 12 changed, differently from p3
expect_exit 4 imgbackup -q --name p4 --parent p1 C s4
expect_msg "rolled back or truncated"
expect_exit 0 imgbackup -q --accept-rollback --name p4 --parent p1 C s4
restore_cmp C p4 s4

# ---- 1. a new point id, new origin ids, new digests ---------------------------------------------
icimg_py deleted/00000003.img C/00000003.img <<'EOF'
import sys, icimg
old, new = icimg.Image(sys.argv[1]), icimg.Image(sys.argv[2])
assert old.version == new.version == 2, (old.version, new.version)
assert old.slot["seq"] == new.slot["seq"] == 3 and (old.name, new.name) == ("p3", "p4")
a, b = old.slot["point_id"], new.slot["point_id"]
assert a and b and a != b, (a, b)
for img, pid in ((old, a), (new, b)):
    own = [e for e in img.entries if e["origin"] == 3]
    assert [e["pos"] for e in own] == [12], own
    assert all(e["origin_id"] == pid for e in own)
    assert all(e["origin_id"] != pid for e in img.entries if e["origin"] != 3)
assert old.entry(12)["digest"] != new.entry(12)["digest"]
EOF
rm -rf reused reused-state
cp -a C reused
cp -a "$IMGCHAIN_STATE_DIR" reused-state
again()
{
	rm -rf C "$IMGCHAIN_STATE_DIR"
	cp -a reused C
	cp -a reused-state "$IMGCHAIN_STATE_DIR"
}

# ---- 2. p3's record in p4 --------------------------------------------------------------------------
plant()
{
	icimg_py C/00000003.img deleted/00000003.img "$1" <<'EOF'
import sys, icimg
mine, other = icimg.Image(sys.argv[1]), icimg.Image(sys.argv[2])
e, o = mine.entry(12), other.entry(12)
assert e["origin"] == o["origin"] == 3
for k in ("record", "stored_len", "kind", "rec_hash", "digest"):
    e[k] = o[k]
if sys.argv[3] == "whole":
    e["origin_id"] = o["origin_id"]
mine.write()
EOF
}
again
plant p4-id
snap
expect_exit 0 imgverify C
expect_exit 4 imgverify --data C
expect_msg "^imgverify: C/00000003.img: point 'p4', block 12 \(disk bytes 786432..851967\): block 12 \(point seq 3\): authentication failed$"
expect_msg "^imgverify: C/00000003.img: restore point 'p4': seal mismatch"
expect_exit 4 imgrestore C p4 out
expect_msg "^imgrestore: C/00000003.img: restore point 'p4': seal mismatch"
[[ ! -e out ]] || fail "a failed restore left DEST"
restore_cmp C p2 s2
unchanged "p3's record in p4 under p4's id"
mount_point_eio C p4 "restore point 'p4': .*seal mismatch"
mount_check C p2 s2
unchanged "p3's record in p4 under p4's id (mount)"

again
plant whole
snap
expect_exit 4 imgverify C
expect_msg "^imgverify: C/00000003.img: index entry [0-9]+ \(block 12\): fields out of bounds$"
expect_exit 4 imgverify --data C
expect_msg "index entry [0-9]+ \(block 12\): fields out of bounds"
expect_exit 4 imgrestore C p4 out
expect_msg "^imgrestore: C/00000003.img: index entry [0-9]+ \(block 12\): fields out of bounds$"
[[ ! -e out ]] || fail "a failed restore left DEST"
restore_cmp C p2 s2
unchanged "p3's entry in p4"

# ---- 3. p3's digest in p4: the next backup of p3's data stores block 12 again ---------------------
again
icimg_py C/00000003.img deleted/00000003.img <<'EOF'
import sys, icimg
mine, other = icimg.Image(sys.argv[1]), icimg.Image(sys.argv[2])
e = mine.entry(12)
e["digest"] = other.entry(12)["digest"]
mine.write_entry(e)
EOF
expect_exit 0 imgverify -q --data C   # digests are not sealed (d05-digest.sh)
expect_exit 0 imgbackup --name p5 --parent p4 C s3
expect_out "changed 64.0 KiB \(1 blocks\)"
restore_cmp C p5 s3
icimg_py C/00000004.img <<'EOF'
import sys, icimg
i = icimg.Image(sys.argv[1])
assert [e["pos"] for e in i.data_entries()] == [12], i.data_entries()
assert i.entry(12)["origin"] == 4 and i.entry(12)["origin_id"] == i.slot["point_id"]
EOF

# ---- 4. a v1 chain -----------------------------------------------------------------------------------
export IMGCHAIN_PASSPHRASE="golden passphrase"
export IMGCHAIN_STATE_DIR=$TESTDIR/golden-state
cp -r "$top_srcdir/tests/golden/v1" G
# the disks of tests/unit/test_golden.c's make_disk()
python3 <<'EOF'
BS = 4096
for which, name in enumerate(("mon", "tue", "branch")):
    n = 50 * BS + 123 if which == 0 else 53 * BS
    d, x = bytearray(n), 12345
    for b in range((n + BS - 1) // BS):
        for i in range(b * BS, min((b + 1) * BS, n)):
            x = (x * 1103515245 + 12345) & 0xffffffff
            d[i] = 0 if b % 5 == 0 else b"golden chain "[i % 13] if b % 5 == 1 else (x >> 16) & 0xff
    if which >= 1:
        d[2 * BS:3 * BS] = bytes(BS)
        d[7 * BS + 10:7 * BS + 110] = b"X" * 100
        d[50 * BS:53 * BS] = b"Y" * (3 * BS)
    if which == 2:
        d[11 * BS:12 * BS] = b"Z" * BS
    open(name + ".raw", "wb").write(d)
EOF
expect_exit 0 imgverify -q --data G
for p in mon tue branch; do restore_cmp G $p $p.raw; done
cp tue.raw wed.raw
write_at wed.raw $((3 * 4096 + 7)) 5000 wed
expect_exit 0 imgbackup -q --name wed --parent tue G wed.raw
expect_exit 0 imgbackup -q --full --name f2 G wed.raw
cp wed.raw thu.raw
write_at thu.raw $((20 * 4096)) 100 thu
expect_exit 0 imgbackup -q --name thu --parent f2 G thu.raw
icimg_py G <<'EOF'
import sys, icimg
g = sys.argv[1]
v = {n: icimg.Image("%s/%08d.img" % (g, n)) for n in (4, 5, 6)}
assert [(v[n].name, v[n].version) for n in (4, 5, 6)] == [("wed", 1), ("f2", 2), ("thu", 2)]
# v1: no point id, entry_hash over each entry's first 56 bytes
assert v[4].slot["point_id"] == 0 and v[4].slot["seal_keygen"] == 0
raw = open("%s/00000004.img" % g, "rb").read()
s = v[4].slot
for k in range(s["index_count"]):
    e = raw[s["index_offset"] + 64 * k:s["index_offset"] + 64 * k + 64]
    assert int.from_bytes(e[56:], "little") == icimg.xxh64(e[:56]), k
assert v[5].slot["point_id"] and v[6].slot["point_id"] not in (0, v[5].slot["point_id"])
EOF
expect_exit 0 imgverify -q --data G
for p in mon tue branch wed; do restore_cmp G $p $p.raw; done
restore_cmp G f2 wed.raw
restore_cmp G thu thu.raw
restore_cmp G branch branch.raw
# consolidation merges within one version: tue into wed (v1, a new file), f2 into thu (v2, in the
# full's file); each merged point keeps its version, point id and seal
thu_id=$(icimg_py G/00000006.img <<<'import sys, icimg; print(icimg.Image(sys.argv[1]).slot["point_id"])')
expect_exit 0 imgconsolidate -q --merge tue..wed G
expect_exit 0 imgconsolidate -q --merge f2..thu G
icimg_py G "$thu_id" <<'EOF'
import os, sys, icimg
g = sys.argv[1]
assert sorted(f for f in os.listdir(g) if f.endswith(".img")) == \
    ["00000001.img", "00000003.img", "00000004.img", "00000006.img"]
wed, thu = icimg.Image(g + "/00000004.img"), icimg.Image(g + "/00000006.img")
assert (wed.name, wed.version, wed.slot["point_id"], wed.slot["parent_seq"]) == ("wed", 1, 0, 1)
raw, s = open(g + "/00000004.img", "rb").read(), wed.slot
for k in range(s["index_count"]):
    e = raw[s["index_offset"] + 64 * k:s["index_offset"] + 64 * k + 64]
    assert int.from_bytes(e[56:], "little") == icimg.xxh64(e[:56]), k
assert (thu.name, thu.version, thu.slot["parent_seq"]) == ("thu", 2, 0)
assert thu.slot["point_id"] == int(sys.argv[2])
assert all(e["origin_id"] for e in thu.entries)
EOF
expect_exit 0 imgverify -q --data G
restore_cmp G wed wed.raw
restore_cmp G thu thu.raw
# a v2 point re-parented onto a v1 one (its slot's parent and kind changed, checksum fixed)
icimg_py G/00000006.img <<'EOF'
import sys, icimg
i = icimg.Image(sys.argv[1])
i.slot["parent_seq"], i.slot["kind"] = 4, 4
i.write_slot()
EOF
snap G "$IMGCHAIN_STATE_DIR"
expect_exit 4 imgverify G
expect_msg "^imgverify: G/00000006.img: format version 2 differs from its parent's \(G/00000004.img, version 1\)$"
expect_exit 4 imgrestore G thu out
expect_msg "^imgrestore: G/00000006.img: format version 2 differs from its parent's \(G/00000004.img, version 1\)$"
[[ ! -e out ]] || fail "a failed restore left DEST"
restore_cmp G wed wed.raw
unchanged "a v2 point under a v1 parent"
echo "e05-seq-reuse: ok"
