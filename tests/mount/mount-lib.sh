# mount-lib.sh: shared setup of the imgmount tests (sourced, never run by itself).
# Gives: $WORK (removed on exit), $MNT, $CHAIN, mount_chain/unmount_chain (readiness by
# polling `mountpoint -q` while the daemon lives; always unmounted from the EXIT trap;
# unmount_chain fails when a sanitizer build of the daemon reported anything),
# make_chain (full + incrementals + a branch from tests/lib/mkdisk.sh disks) and helpers.
set -euo pipefail

top_srcdir=${top_srcdir:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
top_builddir=${top_builddir:-$PWD}
PATH=$top_builddir:$PATH

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*" >&2; [[ -f ${WORK:-}/mount.log ]] && sed 's/^/  log: /' "$WORK/mount.log" >&2; exit 1; }
requires() { local t; for t in "$@"; do command -v "$t" >/dev/null 2>&1 || skip "$t is not installed"; done; }

requires fusermount3 mountpoint python3 imgmount imgbackup
[[ -c /dev/fuse && -r /dev/fuse ]] || skip "/dev/fuse is not usable"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/imgmount-test.XXXXXX")
MNT=$WORK/mnt
CHAIN=$WORK/chain
MOUNT_PID=
mkdir -p "$MNT"

cleanup() {
	local rc=$?
	if mountpoint -q "$MNT" 2>/dev/null || [[ -n $(grep " $MNT " /proc/self/mounts || true) ]]; then
		fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" 2>/dev/null || true
	fi
	if [[ -n $MOUNT_PID ]]; then
		kill "$MOUNT_PID" 2>/dev/null || true
		wait "$MOUNT_PID" 2>/dev/null || true
	fi
	rm -rf "$WORK"
	exit $rc
}
trap cleanup EXIT

export IMGCHAIN_PASSPHRASE="mount test passphrase"
unset IMGCHAIN_PASSPHRASE_FILE IMGCHAIN_KDF

# mount_chain [imgmount options...]: mount $CHAIN on $MNT in the foreground (in the
# background of this shell), logging to $WORK/mount.log; wait until it is ready.
mount_chain() {
	imgmount -f "$@" "$CHAIN" "$MNT" 2>>"$WORK/mount.log" &
	MOUNT_PID=$!
	local i
	for ((i = 0; i < 200; i++)); do
		mountpoint -q "$MNT" && return 0
		kill -0 "$MOUNT_PID" 2>/dev/null || { wait "$MOUNT_PID" || true; MOUNT_PID=; fail "imgmount died before mounting"; }
		sleep 0.05
	done
	fail "imgmount not ready after 10 s"
}

unmount_chain() {
	fusermount3 -u "$MNT" || fail "fusermount3 -u failed"
	wait "$MOUNT_PID" || fail "imgmount exited with status $?"
	MOUNT_PID=
	! mountpoint -q "$MNT" || fail "still mounted"
	check_sanitizers "$WORK/mount.log"
}

# check_sanitizers LOG: fail if a sanitizer build of a tool reported anything in LOG
# (TSan data races, ASan/UBSan errors); silent for a normal build.
check_sanitizers() {
	[[ -f $1 ]] || return 0
	! grep -qE 'WARNING: ThreadSanitizer|ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:' "$1" ||
		fail "a sanitizer reported an error in $1"
}

# make_chain SIZE_MIB: disks $WORK/d0..d3 and points mon (full), tue, wed (incrementals),
# branch (incremental of tue).  Uses tests/lib/mkdisk.sh when its tools are there, else
# generated data with zero runs.
make_chain() {
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

# The point names and their source disks.
POINTS="mon:d0 tue:d1 wed:d2 branch:d3"
