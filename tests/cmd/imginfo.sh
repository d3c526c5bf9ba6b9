#!/bin/bash
# imginfo.sh: the text tree shows every point with its kind and parent, drawn as a tree; --json
# parses and holds exactly the documented fields (imginfo(1)) with the right values; both work
# without passphrase or key file.
source "${top_srcdir:-.}/tests/lib/functions.sh"
requires imgbackup imginfo

bs=65536
size1=$((2 * 1048576 + 1000))        # 33 blocks, the last one 1000 bytes
mkrandom_bytes s1 $size1 one
t0=$(date -u +%s)
expect_exit 0 imgbackup -q --name base C s1
cp s1 s2
write_at s2 0 10 a                   # block 0
zero_at s2 $((3 * bs)) $bs           # block 3 becomes zero
expect_exit 0 imgbackup -q --name mon C s2
cp s2 s3
write_at s3 $((10 * bs)) 10 b        # block 10
write_at s3 $((11 * bs)) 10 c        # block 11
expect_exit 0 imgbackup -q --name tue C s3
cp s1 s4
truncate -s $((40 * bs)) s4          # grown: blocks 32 (now whole) .. 39, zeros
write_at s4 $((39 * bs)) 100 d       # block 39
expect_exit 0 imgbackup -q --name test-branch --parent base C s4
expect_exit 0 imgbackup -q --name weekly --full C s3
t1=$(date -u +%s)

# keyless: no passphrase, no key file
mv C/imgchain.key key.saved
unset IMGCHAIN_PASSPHRASE

# ---- text ----------------------------------------------------------------------------------------
expect_exit 0 imginfo C
cat >want.txt <<'EOF'
base                         full            -
├─ mon                       incremental     base
│  └─ tue                    incremental     mon
└─ test-branch               incremental     base
weekly                       full            -
EOF
sed -n '3,$p' last.out | cut -c1-62 | sed 's/ *$//' >got.txt
sed 's/ *$//' want.txt | diff -u - got.txt || fail "the tree differs"
expect_out "^C: chain id [0-9a-f]{16}\.\.\., block size 64.0 KiB, 5 points, [0-9.]+ [KM]iB on disk$"
expect_out "^NAME +KIND +PARENT +CREATED \(UTC\) +DISK +STORED +DATA +ZERO$"
expect_out "^base +full +- +[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2} +2.0 MiB +2.0 MiB +33 +0$"
expect_out "^│  └─ tue +incremental +mon .* 2.0 MiB +128.1 KiB +2 +0$"

# ---- JSON ----------------------------------------------------------------------------------------
expect_exit 0 imginfo --json C
cp last.out info.json
expect_exit 0 imginfo -J C
cmp last.out info.json
ls -l C >ls.txt
json_check info.json <<EOF
import os, re, datetime
assert set(j) == {"format_version", "chain", "chain_id", "block_size", "points", "bad_files"}, j.keys()
assert j["format_version"] == 1 and j["chain"] == "C" and j["block_size"] == $bs
assert re.fullmatch("[0-9a-f]{32}", j["chain_id"]), j["chain_id"]
assert j["bad_files"] == []
keys = {"name", "seq", "parent", "parent_seq", "kind", "created", "created_unix", "disk_size",
        "stored_bytes", "data_blocks", "zero_blocks", "depth", "broken", "file", "file_size",
        "post_snapshot", "post_snapshot_of", "post_snapshots", "folded", "cdp_session",
        "cdp_checkpoint"}
pts = j["points"]
for p in pts:
    assert set(p) == keys, p.keys()
    assert type(p["seq"]) is int and type(p["disk_size"]) is int and type(p["broken"]) is bool
    assert $t0 <= p["created_unix"] <= $t1, p
    c = datetime.datetime.fromtimestamp(p["created_unix"], datetime.timezone.utc)
    assert p["created"] == c.strftime("%Y-%m-%dT%H:%M:%SZ"), p
    assert p["file"] == "%08d.img" % p["seq"], p
    assert p["file_size"] == os.path.getsize("C/" + p["file"]), p
    assert p["broken"] is False
    assert p["post_snapshot"] is False and p["post_snapshot_of"] is None, p
    assert p["post_snapshots"] == [], p
    assert p["folded"] is False and p["cdp_session"] is None and p["cdp_checkpoint"] is None, p
    # header + records + index: 64 bytes per entry
    assert p["file_size"] == 4096 + p["stored_bytes"] + 64 * (p["data_blocks"] + p["zero_blocks"]), p
got = [(p["name"], p["seq"], p["parent"], p["parent_seq"], p["kind"], p["depth"], p["disk_size"],
        p["data_blocks"], p["zero_blocks"]) for p in pts]
want = [("base", 1, None, 0, "full", 1, $size1, 33, 0),
        ("mon", 2, "base", 1, "incremental", 2, $size1, 1, 1),
        ("tue", 3, "mon", 2, "incremental", 3, $size1, 2, 0),
        # block 32 grew from 1000 bytes to a whole block (a new length: stored again), 33..38
        # past the parent's end are zeros (nothing recorded), 39 is new
        ("test-branch", 4, "base", 1, "incremental", 2, 40 * $bs, 2, 0),
        ("weekly", 5, None, 0, "full", 1, $size1, 32, 0)]
assert got == want, "\n%s\n%s" % (got, want)
# random data does not compress: each record is the block + 24 nonce + 16 tag
assert pts[0]["stored_bytes"] == $size1 + 33 * 40, pts[0]
assert pts[2]["stored_bytes"] == 2 * ($bs + 40), pts[2]
EOF

# ---- a damaged file and a broken point ----------------------------------------------------------
printf 'garbage' | dd of=C/00000002.img bs=1 seek=0 conv=notrunc status=none
expect_exit 4 imginfo C
expect_out "^└─ test-branch"
expect_out "^tue +incremental +- .*\(BROKEN: parent missing\)$"
expect_out "^damaged file: C/00000002.img: not an imgchain image \(bad magic\)$"
expect_exit 4 imginfo --json C
json_check last.out <<'EOF'
assert j["bad_files"] == [{"file": "00000002.img", "error": "C/00000002.img: not an imgchain image (bad magic)"}], j
tue = [p for p in j["points"] if p["name"] == "tue"][0]
assert tue["broken"] is True and tue["parent"] is None and tue["parent_seq"] == 2, tue
EOF
