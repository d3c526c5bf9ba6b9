#!/bin/bash
# mount-syncfail.sh: a writable mount whose overlay data file fails one fdatasync (EIO, as a
# device losing a write; tests/lib/faultsync.so) reports it: the fsync that met the error
# fails with EIO although the commit's own fdatasync would succeed (the kernel reports a
# writeback error once), and every later write or fsync fails too (the overlay's error is
# sticky: the lost pages cannot be told apart).  After a remount without the fault, the
# point reads the bytes of its last successful fsync (the unsynced write is not published),
# the overlay opens clean, and the chain's files never changed.
. "$(dirname "$0")/mount-lib.sh"
requires sha256sum
shim=$top_builddir/tests/lib/faultsync.so
[[ -f $shim ]] || fail "$shim not built (make check builds it)"

make_disk_chain 64
(cd "$CHAIN" && sha256sum -- * >"$WORK/chain.sums")
OV=$WORK/overlay
trigger=$WORK/fail-next-sync
MOUNT_ENV=(IMGCHAIN_FAULT_SYNC="$trigger:.data" LD_PRELOAD="$shim")
mount_chain "$CHAIN" --overlay "$OV"
MOUNT_ENV=()

python3 - "$MNT/tue/disk.raw" "$trigger" <<'PY' || fail "fsync errors were not reported"
import errno, os, sys
path, trigger = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDWR)
# a first write and fsync succeed: the baseline the remount must show
os.pwrite(fd, b"A" * 4096, 1 << 20)
os.fsync(fd)
# the next fdatasync of the overlay's data file fails
os.pwrite(fd, b"B" * 4096, 2 << 20)
open(trigger, "w").close()
try:
    os.fsync(fd)
    sys.exit("fsync after a lost write returned success")
except OSError as e:
    assert e.errno == errno.EIO, "fsync: %s, expected EIO" % e
assert not os.path.exists(trigger), "the fault was not injected"
# sticky: later fsyncs, and writes (or their fsync), fail as well
try:
    os.fsync(fd)
    sys.exit("a second fsync returned success")
except OSError as e:
    assert e.errno == errno.EIO, "second fsync: %s" % e
try:
    os.pwrite(fd, b"C" * 4096, 3 << 20)
    os.fsync(fd)
    sys.exit("a write after the error was acknowledged")
except OSError as e:
    assert e.errno == errno.EIO, "write after the error: %s" % e
os.close(fd)
PY
grep -q "fdatasync" "$WORK/mount.log" || fail "the lost write was not logged"
unmount_chain

# remount without the fault: the synced write is there, the rest is the backup's bytes
mount_chain "$CHAIN" --overlay "$OV"
python3 - "$MNT/tue/disk.raw" "$WORK/d1" <<'PY' || fail "wrong bytes after the remount"
import os, sys
fd, src = os.open(sys.argv[1], os.O_RDONLY), open(sys.argv[2], "rb")
def orig(off, n):
    src.seek(off)
    return src.read(n)
assert os.pread(fd, 4096, 1 << 20) == b"A" * 4096, "the fsync'd write is lost"
for off in (2 << 20, 3 << 20):
    assert os.pread(fd, 4096, off) == orig(off, 4096), "an unacknowledged write at %d was published" % off
PY
unmount_chain
(cd "$CHAIN" && sha256sum -c --quiet "$WORK/chain.sums") || fail "the chain's files changed"
echo "ok: lost overlay write reported (EIO, sticky), nothing unacknowledged published"
