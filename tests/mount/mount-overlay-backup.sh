#!/bin/bash
# mount-overlay-backup.sh: imgbackup --from-overlay makes what a writable mount's overlay
# holds a new point, child of the overlay's point, while a writer keeps writing through the
# mount.  The writer appends 4 KiB records (unaligned), each fsync'd, and after each one
# rewrites (in place, fsync'd) a counter block naming the newest record: any consistent cut
# holds a counter c, every record up to c whole, record c + 1 in any state (not yet flushed),
# none past it.  The point taken online must show that;
# the writer goes on after it; a second point taken after the writer stopped equals the
# mount's disk byte for byte (online, then again with the mount gone); every block outside
# the writer's region is the base's; `imgverify --data` passes; the overlay's files are not
# changed by a snapshot; an overlay of another point is refused.  As root with mkfs.xfs, the
# same online cut once more with the overlay on XFS, where the cut is a reflink.
. "$(dirname "$0")/mount-lib.sh"
requires imgrestore imgverify cmp sha256sum

bs=65536
size=$((24 * 1048576 + 4096))
mkrandom_bytes "$WORK/s" $size base
zero_at "$WORK/s" $((3 * bs)) $((5 * bs))
expect_exit 0 imgbackup -q --name p1 "$CHAIN" "$WORK/s"
expect_exit 0 imgbackup -q --name p2 "$CHAIN" "$WORK/s"    # another point, same bytes
OV=$WORK/overlay
mount_chain "$CHAIN" --overlay "$OV"

REC0=$((2 * 1048576 + 512))   # records: unaligned to the chain's blocks
CNT=$((20 * 1048576 + 100))   # the counter block
cat >"$WORK/writer.py" <<'EOF'
import os, random, sys, time
disk, rec0, cnt, stop, log = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
def rec(i):
    return (b"REC%08d" % i) + random.Random(i).randbytes(4096 - 11)
fd = os.open(disk, os.O_RDWR)
i = 0
while not os.path.exists(stop) and i < 4000:
    os.pwrite(fd, rec(i), rec0 + i * 4096)
    os.fsync(fd)
    os.pwrite(fd, (b"CNT%08d" % i).ljust(600, b"."), cnt)
    os.fsync(fd)
    i += 1
    with open(log + ".tmp", "w") as f:
        f.write("%d\n" % i)
    os.replace(log + ".tmp", log)    # never seen empty
os.close(fd)
EOF
cat >"$WORK/check.py" <<'EOF'
import random, sys
img, base, rec0, cnt = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
d = open(img, "rb").read()
b = open(base, "rb").read()
assert len(d) == len(b), "size %d, base %d" % (len(d), len(b))
c = d[cnt:cnt + 600]
assert c[:3] == b"CNT", "no counter: %r" % c[:16]
n = int(c[3:11])
assert c == (b"CNT%08d" % n).ljust(600, b"."), "torn counter"
def at(k):
    return d[rec0 + k * 4096:rec0 + (k + 1) * 4096]
for k in range(n + 1):      # flushed before the counter named n: whole
    assert at(k) == (b"REC%08d" % k) + random.Random(k).randbytes(4085), \
        "counter %d, but record %d is damaged or missing" % (n, k)
for k in range(n + 2, n + 40):  # written after counter n + 1: absent
    assert at(k)[:11] != b"REC%08d" % k, "counter %d, but record %d is there" % (n, k)
end = rec0 + (n + 2) * 4096    # record n + 1 may be anything: it was not flushed
assert d[:rec0] == b[:rec0] and d[end:cnt] == b[end:cnt] and d[cnt + 600:] == b[cnt + 600:], \
    "bytes outside the writer's region differ from the base"
print(n)
EOF

python3 "$WORK/writer.py" "$MNT/p1/disk.raw" $REC0 $CNT "$WORK/stop" "$WORK/count" &
writer=$!
cleanup_fn kill_quiet $writer
for ((i = 0; i < 400; i++)); do
	[[ -s $WORK/count && $(cat "$WORK/count") -ge 30 ]] && break
	sleep 0.05
done
[[ $(cat "$WORK/count") -ge 30 ]] || fail "the writer did not get going"

# ---- online: the cut is consistent, the writer goes on ---------------------------------------
expect_exit 0 imgbackup --from-overlay "$OV/p1" --name cut1 "$CHAIN"
expect_out "^overlay $OV/p1: cut at map generation [0-9]+, [0-9]+ blocks of 4 KiB, writes held "
expect_out "^incremental point 'cut1' \(seq 3\) based on 'p1' in "
after=$(cat "$WORK/count")
expect_exit 0 imgrestore -q "$CHAIN" cut1 "$WORK/cut1"
n=$(python3 "$WORK/check.py" "$WORK/cut1" "$WORK/s" $REC0 $CNT) || fail "the online point is not a consistent cut"
echo "cut at counter $n; the writer had written $after records when the backup ended"
for ((i = 0; i < 400; i++)); do
	(($(cat "$WORK/count") > after + 20)) && break
	sleep 0.05
done
(($(cat "$WORK/count") > after + 20)) || fail "the writer did not go on after the cut"
((n < $(cat "$WORK/count") - 1)) || fail "the cut is not older than the writer's last record"

# ---- after the writer: the point equals the mount's disk ---------------------------------------
touch "$WORK/stop"
wait $writer || fail "the writer failed"
cp "$MNT/p1/disk.raw" "$WORK/final"
python3 "$WORK/check.py" "$WORK/final" "$WORK/s" $REC0 $CNT >/dev/null || fail "the mount's disk is not consistent"
(cd "$OV/p1" && sha256sum -- * >"$WORK/ov.sums")
expect_exit 0 imgbackup -q --from-overlay "$OV/p1" --name cut2 "$CHAIN"
(cd "$OV/p1" && sha256sum -c --quiet "$WORK/ov.sums") || fail "the snapshot changed the overlay's files"
restore_cmp "$CHAIN" cut2 "$WORK/final"

# ---- refusals ---------------------------------------------------------------------------------
expect_exit 1 imgbackup --from-overlay "$OV/p1" --parent p2 --name bad "$CHAIN"
expect_msg "disk.raw.map: overlay made on restore point 'p1' \(seq 1, seal [0-9a-f]{16}\), not on restore point 'p2'"
expect_exit 1 imgbackup --from-overlay "$OV/p2" --name bad "$CHAIN"
expect_msg "^imgbackup: $OV/p2: no overlay of disk.raw here"
expect_exit 2 imgbackup --from-overlay "$OV/p1" "$CHAIN" "$WORK/s"
unmount_chain

# ---- offline: the same overlay, the mount gone -------------------------------------------------
expect_exit 0 imgbackup -q --from-overlay "$OV/p1" --name cut3 "$CHAIN"
restore_cmp "$CHAIN" cut3 "$WORK/final"
expect_exit 0 imgverify --data "$CHAIN"
expect_out " no problems"

# ---- on XFS: the cut is a reflink ----------------------------------------------------------------
if [[ $(id -u) -ne 0 ]] || ! command -v mkfs.xfs >/dev/null; then
	echo "not run: the cut on XFS (needs root and mkfs.xfs)"
	exit 0
fi
truncate -s 400M "$WORK/xfs.img"
mkfs.xfs -q "$WORK/xfs.img" || fail "mkfs.xfs failed"
mkdir "$WORK/xfs"
if ! mount -o loop "$WORK/xfs.img" "$WORK/xfs" 2>"$WORK/xfs.err"; then
	echo "not run: the cut on XFS (cannot mount a loop device: $(cat "$WORK/xfs.err"))"
	exit 0
fi
xfs_cleanup() { _unmount_quiet; kill_quiet "${writer2:-}"; umount "$WORK/xfs" || umount -l "$WORK/xfs"; }
cleanup_fn xfs_cleanup
rm -f "$WORK/stop" "$WORK/count"
mount_chain "$CHAIN" --overlay "$WORK/xfs/ov"
python3 "$WORK/writer.py" "$MNT/p2/disk.raw" $REC0 $CNT "$WORK/stop" "$WORK/count" &
writer2=$!
for ((i = 0; i < 400; i++)); do
	[[ -s $WORK/count && $(cat "$WORK/count") -ge 30 ]] && break
	sleep 0.05
done
expect_exit 0 imgbackup --from-overlay "$WORK/xfs/ov/p2" --name xfscut "$CHAIN"
expect_out "writes held [0-9.]+ s \(reflink\)$"
touch "$WORK/stop"
wait $writer2 || fail "the writer failed"
expect_exit 0 imgrestore -q "$CHAIN" xfscut "$WORK/xfscut"
python3 "$WORK/check.py" "$WORK/xfscut" "$WORK/s" $REC0 $CNT >/dev/null || fail "the cut on XFS is not consistent"
unmount_chain
expect_exit 0 imgverify --data "$CHAIN"
