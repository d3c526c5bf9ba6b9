# mount-lib.sh: shared setup of the imgmount tests (sourced, never run by itself), on top of
# tests/lib/functions.sh (whose mount_chain/unmount_chain mount and check; a mount left up is
# unmounted at exit).  Gives $WORK (= $TESTDIR), $CHAIN, $POINTS and make_disk_chain.
source "${top_srcdir:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}/tests/lib/functions.sh"

requires fusermount3 mountpoint python3 imgmount imgbackup
[[ -c /dev/fuse && -r /dev/fuse ]] || skip "/dev/fuse is not usable"

WORK=$TESTDIR
CHAIN=$WORK/chain
mkdir -p "$MNT"

# make_disk_chain SIZE_MIB: disks $WORK/d0..d3 and points mon (full), tue, wed (incrementals),
# branch (incremental of tue).  Uses tests/lib/mkdisk.sh when its tools are there, else
# generated data with zero runs.
make_disk_chain() {
	local size=${1:-64}
	if source "$top_srcdir/tests/lib/mkdisk.sh" 2>/dev/null &&
	   command -v mkfs.ext4 >/dev/null && command -v mcopy >/dev/null && command -v debugfs >/dev/null &&
	   mkdisk_create "$WORK/d0" "$size" >/dev/null; then
		cp --sparse=always "$WORK/d0" "$WORK/d1" && mkdisk_mutate "$WORK/d1" 1 >/dev/null
		cp --sparse=always "$WORK/d1" "$WORK/d2" && mkdisk_mutate "$WORK/d2" 2 >/dev/null
		cp --sparse=always "$WORK/d1" "$WORK/d3" && mkdisk_mutate "$WORK/d3" 3 >/dev/null
	else
		python3 - "$WORK" "$size" <<'PY'
import os, random, sys
work, size = sys.argv[1], int(sys.argv[2]) << 20
rng = random.Random(7)
d = bytearray(size)
for b in range(0, size, 65536):
    k = (b >> 16) % 7
    if k in (1, 4):
        continue
    chunk = rng.randbytes(65536) if k != 3 else (b"log line %d\n" % b) * (65536 // 16)
    d[b:b + 65536] = chunk[:65536]
def mutate(d, seed):
    r = random.Random(seed)
    d = bytearray(d)
    for _ in range(40):
        at = r.randrange(0, size - 4096, 512)
        d[at:at + 4096] = r.randbytes(4096)
    z = r.randrange(0, size // 65536) * 65536
    d[z:z + 65536] = bytes(65536)
    return d
d1 = mutate(d, 1); d2 = mutate(d1, 2); d3 = mutate(d1, 3)
for n, x in (("d0", d), ("d1", d1), ("d2", d2), ("d3", d3)):
    open(os.path.join(work, n), "wb").write(x)
PY
	fi
	imgbackup -q -n mon "$CHAIN" "$WORK/d0"
	imgbackup -q -n tue "$CHAIN" "$WORK/d1"
	imgbackup -q -n wed "$CHAIN" "$WORK/d2"
	imgbackup -q -n branch -p tue "$CHAIN" "$WORK/d3"
}

# kill_mount: SIGKILL the mount daemon (mount_chain's), clean the dead mount (lazy unmount).
kill_mount() {
	kill -KILL "$MOUNT_PID" 2>/dev/null || true
	wait "$MOUNT_PID" 2>/dev/null || true
	MOUNT_PID=
	fusermount3 -u -z "$MNT" 2>/dev/null || true
	! mountpoint -q "$MNT" || fail "the dead mount is still there"
}

# The point names and their source disks.
POINTS="mon:d0 tue:d1 wed:d2 branch:d3"
