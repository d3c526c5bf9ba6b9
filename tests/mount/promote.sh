#!/bin/bash
# promote.sh: live promote (imgpromote) of a disk served by a writable mount while a writer
# keeps writing to it through the mount.  The writer (python, seeded) writes random-sized,
# aligned and unaligned pieces to tue's disk.raw and disk-flat.vmdk (one disk), fsyncing
# now and then, and logs every write once pwrite returned (acknowledged: no daemon dies
# here); the copy is rate-limited so that writes land before, inside and behind the
# copier's position.  After the switch: DEST equals the backup with every logged write
# applied in order, byte for byte; the mount reads the same; writes then go to DEST alone
# (DEST changes, the overlay's files do not); a remount serves DEST; info.json and
# --status show the state.  A writer chasing the copier (every write inside the chunk being
# copied) loses nothing (fails without the range lock).  The NBD export on the same overlay
# serves the switched disk from DEST (when nbdkit and the plugin are there).  A loop
# device as DEST when losetup works (root).  Errors: a read-only mount, a path not served
# by imgmount, a second DEST, DEST inside the mount, usage.
. "$(dirname "$0")/promote-lib.sh"

# ---- usage and refusals -----------------------------------------------------------------
expect_exit 2 imgpromote
expect_exit 2 imgpromote "$MNT" tue
expect_exit 2 imgpromote --rate 0 "$MNT" tue "$DEST"
mkdir -p "$WORK/notamount/tue" && : >"$WORK/notamount/tue/disk.raw"
expect_exit 1 imgpromote "$WORK/notamount" tue "$DEST"
expect_msg "not a disk served by an imgmount"
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
python3 "$WORK/writer.py" "$MNT" tue 1 "$WORK/log" "$WORK/stop" 2>"$WORK/writer.err" &
wpid=$!
cleanup_fn kill_quiet "$wpid"
while [[ $(grep -c '^a' "$WORK/log") -lt 50 ]]; do
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
n_at_switch=$(grep -c '^a' "$WORK/log")
sleep 0.5
touch "$WORK/stop"
wait "$wpid" || fail "writer: $(cat "$WORK/writer.err")"
n_total=$(grep -c '^a' "$WORK/log")
echo "writes: $n_at_switch by the switch, $n_total in all"
[[ $n_total -gt $n_at_switch ]] || fail "no write after the switch"
python3 "$WORK/check.py" "$WORK/d1" "$WORK/log" "$DEST" || fail "DEST differs from the disk after the last write"
cmp "$MNT/tue/disk.raw" "$DEST" || fail "the mount differs from DEST"
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

# ---- a writer chasing the copier: every write lands in the chunk being copied -----------------
# (4 KiB pieces at random places of the 1 MiB at the copier's position, read from the
# status, while the rate-limited copy sleeps and wakes): the copier must never write bytes
# it read before a write over that write's bytes in DEST (the range lock)
cat >"$WORK/chase.py" <<'PY'
import os, random, sys
mnt, point, seed, log = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
path = os.path.join(mnt, point, "disk.raw")
fd = os.open(path, os.O_RDWR)
size = os.fstat(fd).st_size
out = open(log, "a", buffering=1)
r = random.Random(seed)
i = 0
while True:
    st = dict(f.split("=", 1) for f in os.getxattr(path, "user.imgchain.promote").decode().split()[:3])
    if st["phase"] != "copying":
        break
    at = int(st["copied"])
    for _ in range(8):
        off = at + r.randrange(0, 256) * 4096
        if off + 4096 > size:
            continue
        out.write("w %d %d %d 4096\n" % (seed, i, off))
        os.pwrite(fd, random.Random(seed * 1000003 + i).randbytes(4096), off)
        out.write("a %d %d\n" % (seed, i))
        i += 1
print(i)
PY
mount_chain "$CHAIN" --overlay "$OV"
: >"$WORK/log3"
imgpromote -q --no-wait --rate 16M "$MNT" mon "$WORK/mon.img" || fail "imgpromote mon"
python3 "$WORK/chase.py" "$MNT" mon 3 "$WORK/log3" >"$WORK/chase.out" || fail "chase.py"
imgpromote -q "$MNT" mon "$WORK/mon.img" || fail "the promote of mon did not switch"
echo "chasing writer: $(cat "$WORK/chase.out") writes at the copier's position"
python3 "$WORK/check.py" "$WORK/d0" "$WORK/log3" "$WORK/mon.img" ||
	fail "DEST lost a write made where the copier was copying"
unmount_chain

# ---- the NBD export on the same overlay serves the switched disk from DEST too ----------------
PLUGIN=$top_builddir/nbdkit-imgchain-plugin.so
if command -v nbdkit >/dev/null && command -v qemu-img >/dev/null && command -v qemu-io >/dev/null &&
   [[ -f $PLUGIN ]]; then
	printf '%s\n' "$IMGCHAIN_PASSPHRASE" >"$WORK/passphrase"
	start_nbd
	uri="nbd+unix:///?socket=$WORK/nbd.sock"
	qemu-img convert -f raw -O raw "$uri" "$WORK/nbd.out" || fail "qemu-img convert from the export"
	cmp "$WORK/nbd.out" "$DEST" || fail "the NBD export does not serve DEST"
	qemu-io -f raw -c "write -P 0x5a 65536 4096" -c flush "$uri" >/dev/null || fail "qemu-io write"
	python3 -c 'import sys; d = open(sys.argv[1], "rb").read(); sys.exit(d[65536:69632] != b"\x5a" * 4096)' "$DEST" ||
		fail "a write through the NBD export is not in DEST"
	[[ $(sha256sum "$OV"/tue/disk.raw.* | sha256sum) == "$ovsum" ]] || fail "the NBD export wrote the overlay"
	kill "$npid"
	wait "$npid" || true
	echo "NBD export: serves DEST"
else
	echo "no nbdkit or plugin: the NBD case is not run"
fi

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
	head -c "$SIZE" "$LOOP" >"$WORK/loop.out"
	python3 "$WORK/check.py" "$WORK/d2" "$WORK/log2" "$WORK/loop.out" ||
		fail "the loop device differs from the disk after the last write"
	cmp "$MNT/wed/disk.raw" "$WORK/loop.out" || fail "the mount differs from the loop device"
	unmount_chain
	echo "loop device DEST: ok"
else
	echo "no loop device: the block-device case is not run"
fi
echo "promote: ok"
