#!/bin/bash
# promote.sh: live promote (imgpromote) of a disk served by a writable mount while a writer
# keeps writing to it through the mount.  The writer (python, seeded) writes random-sized,
# aligned and unaligned pieces to tue's disk.raw and disk-flat.vmdk (one disk), fsyncing
# now and then, and logs every write once pwrite returned (acknowledged: no daemon dies
# here); the copy is rate-limited so that writes land before, inside and behind the
# copier's position.  After the switch: DEST equals the backup with every logged write
# applied in order, byte for byte; the mount reads the same; writes then go to DEST alone
# (DEST changes, the overlay's files do not); a remount serves DEST; info.json and
# --status show the state.  A loop device as DEST when losetup works (root).  Errors: a
# read-only mount, a second DEST, DEST inside the mount, usage.
. "$(dirname "$0")/mount-lib.sh"
requires imgpromote sha256sum

make_disk_chain 64
OV=$WORK/overlay
DEST=$WORK/prod.img
SIZE=$(stat -c %s "$WORK/d1")

# writer.py MNT POINT SEED LOG STOPFILE: writes until STOPFILE exists (at least 200 writes)
cat >"$WORK/writer.py" <<'PY'
import os, random, sys
mnt, point, seed, log, stop = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
r = random.Random(seed)
fds = [os.open(os.path.join(mnt, point, n), os.O_RDWR) for n in ("disk.raw", "disk-flat.vmdk")]
size = os.fstat(fds[0]).st_size
out = open(log, "a", buffering=1)
i = 0
while i < 200 or not os.path.exists(stop):
    fd = r.choice(fds)
    n = r.choice((1, 511, 4096, 5000, 65536, 300000, 1 << 20))
    off = r.randrange(0, size - n)
    if r.random() < 0.5:
        off -= off % 4096
    data = random.Random(seed * 1000003 + i).randbytes(n)
    done = 0
    while done < n:
        done += os.pwrite(fd, data[done:], off + done)
    out.write("%d %d %d %d\n" % (seed, i, off, n))
    if r.random() < 0.2:
        os.fsync(fd)
    i += 1
print(i)
PY
# model.py BASE OUT LOG...: BASE with every logged write applied in order
cat >"$WORK/model.py" <<'PY'
import random, sys
d = bytearray(open(sys.argv[1], "rb").read())
for log in sys.argv[3:]:
    for line in open(log):
        seed, i, off, n = map(int, line.split())
        d[off:off + n] = random.Random(seed * 1000003 + i).randbytes(n)
open(sys.argv[2], "wb").write(d)
PY

# ---- usage and refusals -----------------------------------------------------------------
expect_exit 2 imgpromote
expect_exit 2 imgpromote "$MNT" tue
expect_exit 2 imgpromote --rate 0 "$MNT" tue "$DEST"
mount_chain "$CHAIN"
expect_exit 1 imgpromote "$MNT" tue "$DEST"
expect_msg "Read-only file system"
expect_exit 1 imgpromote "$MNT" nosuch "$DEST"
expect_msg "nosuch"
unmount_chain
[[ ! -e $DEST ]] || fail "a refused promote created DEST"

# ---- promote while the writer runs ---------------------------------------------------------
mount_chain "$CHAIN" --overlay "$OV"
expect_exit 1 imgpromote "$MNT" tue "$MNT/tue/x.img"
expect_msg "inside the mount"
: >"$WORK/log"
python3 "$WORK/writer.py" "$MNT" tue 1 "$WORK/log" "$WORK/stop" >"$WORK/writer.out" 2>"$WORK/writer.err" &
wpid=$!
cleanup_fn kill_quiet "$wpid"
while [[ $(wc -l <"$WORK/log") -lt 50 ]]; do
	kill -0 "$wpid" 2>/dev/null || fail "writer: $(cat "$WORK/writer.err")"
	sleep 0.05
done
# 64 MiB at 32 MiB/s: about 2 s of copy with the writer running
imgpromote --no-wait --rate 32M "$MNT" tue "$DEST" >"$WORK/nowait.out" ||
	fail "imgpromote --no-wait: $(cat "$WORK/nowait.out")"
grep -q '^phase=copying copied=[0-9]* size='"$SIZE"' dest='"$DEST"'$' "$WORK/nowait.out" ||
	fail "status after start: $(cat "$WORK/nowait.out")"
# the same again is no error (it waits for the running promote); another DEST is refused
expect_exit 1 imgpromote --no-wait "$MNT" tue "$WORK/other.img"
expect_msg "already promoted"
python3 - "$MNT/tue/info.json" <<'PY' || fail "info.json while copying"
import json, sys
p = json.load(open(sys.argv[1]))["promote"]
assert p["phase"] in ("copying", "switched") and p["size"] > 0 and p["error"] is None, p
PY
imgpromote "$MNT" tue "$DEST" >"$WORK/promote.out" || fail "imgpromote: $(cat "$WORK/promote.out")"
grep -q "tue: switched to $DEST" "$WORK/promote.out" || fail "summary: $(cat "$WORK/promote.out")"
n_at_switch=$(wc -l <"$WORK/log")
sleep 0.5
touch "$WORK/stop"
wait "$wpid" || fail "writer: $(cat "$WORK/writer.err")"
n_total=$(wc -l <"$WORK/log")
echo "writes: $n_at_switch by the switch, $n_total in all"
[[ $n_total -gt $n_at_switch ]] || fail "no write after the switch"
python3 "$WORK/model.py" "$WORK/d1" "$WORK/model" "$WORK/log"
cmp "$DEST" "$WORK/model" || fail "DEST differs from the disk after the last write"
cmp "$MNT/tue/disk.raw" "$WORK/model" || fail "the mount differs from the disk after the last write"
imgpromote --status "$MNT" tue >"$WORK/status.out"
grep -q "^phase=switched copied=$SIZE size=$SIZE dest=$DEST\$" "$WORK/status.out" ||
	fail "status: $(cat "$WORK/status.out")"
json_check "$MNT/tue/info.json" 'd["promote"]["phase"] == "switched" and d["promote"]["copied"] == d["disk_size"]'
grep -q '^phase switched$' "$OV/tue/promote.state" || fail "state file: $(cat "$OV/tue/promote.state")"

# ---- after the switch: DEST alone -------------------------------------------------------------
ovsum=$(sha256sum "$OV"/tue/disk.raw.* | sha256sum)
destsum=$(sha256sum <"$DEST")
python3 - "$MNT/tue/disk.raw" "$MNT/tue/disk-flat.vmdk" <<'PY'
import os, sys
for path, off in ((sys.argv[1], 12345), (sys.argv[2], 1 << 20)):
    fd = os.open(path, os.O_RDWR)
    os.pwrite(fd, b"after the switch " * 100, off)
    os.fsync(fd)
    os.close(fd)
PY
[[ $(sha256sum "$OV"/tue/disk.raw.* | sha256sum) == "$ovsum" ]] || fail "the overlay changed after the switch"
[[ $(sha256sum <"$DEST") != "$destsum" ]] || fail "DEST did not change"
python3 - "$DEST" <<'PY' || fail "the writes after the switch are not in DEST"
import sys
d = open(sys.argv[1], "rb").read()
assert d[12345:12345 + 1700] == b"after the switch " * 100
assert d[1 << 20:(1 << 20) + 1700] == b"after the switch " * 100
PY
expect_exit 1 truncate -s 1M "$MNT/tue/disk.raw"
[[ $(stat -c %s "$MNT/tue/disk.raw") -eq $SIZE ]] || fail "size changed"
# other points are untouched, and not promoted
cmp "$MNT/wed/disk.raw" "$WORK/d2" || fail "wed changed"
imgpromote --status "$MNT" wed | grep -q '^phase=none$' || fail "wed has a promote"
unmount_chain

# a remount serves DEST (the chain and the overlay are no longer read for tue's disk)
cp "$DEST" "$WORK/dest.copy"
mount_chain "$CHAIN" --overlay "$OV"
cmp "$MNT/tue/disk.raw" "$WORK/dest.copy" || fail "the remount does not serve DEST"
imgpromote --status "$MNT" tue | grep -q '^phase=switched' || fail "not switched after a remount"
imgpromote -q "$MNT" tue "$DEST" || fail "imgpromote on a switched disk"
unmount_chain

# ---- a block device as DEST (a loop device) ----------------------------------------------------
if [[ $(id -u) -eq 0 ]] && command -v losetup >/dev/null && truncate -s $((SIZE + 4096)) "$WORK/lo.img" &&
   LOOP=$(losetup -f --show "$WORK/lo.img" 2>/dev/null); then
	cleanup_fn losetup -d "$LOOP"
	mount_chain "$CHAIN" --overlay "$OV"
	: >"$WORK/log2"
	rm -f "$WORK/stop"
	python3 "$WORK/writer.py" "$MNT" wed 2 "$WORK/log2" "$WORK/stop" >/dev/null 2>"$WORK/writer.err" &
	wpid=$!
	imgpromote -q --rate 32M "$MNT" wed "$LOOP" || fail "imgpromote to $LOOP"
	touch "$WORK/stop"
	wait "$wpid" || fail "writer: $(cat "$WORK/writer.err")"
	python3 "$WORK/model.py" "$WORK/d2" "$WORK/model2" "$WORK/log2"
	cmp -n "$SIZE" "$LOOP" "$WORK/model2" || fail "the loop device differs from the disk"
	cmp "$MNT/wed/disk.raw" "$WORK/model2" || fail "the mount differs from the disk (loop)"
	unmount_chain
	echo "loop device DEST: ok"
else
	echo "no loop device: the block-device case is not run"
fi
echo "promote: ok"
