#!/bin/bash
# mount-concurrent.sh: fio random and sequential readers (buffered and O_DIRECT) on two
# points at once, while three more readers verify random ranges and a full pass against
# the sources: every byte is right, no reader sees an error.  A small cache forces
# eviction under the load.  Meanwhile a backup adds a point and the root is listed
# over and over (rescans while reads run).  Then, on a writable mount, writers through disk.raw race
# readers of disk-flat.vmdk (one overlay, created while they read) and stat() calls.
# A sanitizer build of the daemon (scripts/run-tests.sh phase tsan) must stay silent:
# unmount_chain fails on any sanitizer report in the daemon's log.
. "$(dirname "$0")/mount-lib.sh"
requires fio

make_disk_chain 64
mount_chain "$CHAIN" --cache-size 8M

fio --output="$WORK/fio.out" --runtime=6 --time_based --ioengine=psync --group_reporting \
	--name=rand --filename="$MNT/wed/disk.raw" --rw=randread --bs=4k --direct=1 --numjobs=2 \
	--name=seq --filename="$MNT/branch/disk-flat.vmdk" --rw=read --bs=1M --direct=0 \
	--name=seqd --filename="$MNT/wed/disk-flat.vmdk" --rw=read --bs=128k --direct=1 &
FIO=$!
imgbackup -q -n thu "$CHAIN" "$WORK/d1" &
ADD=$!
while kill -0 $FIO 2>/dev/null; do ls "$MNT" >/dev/null && ls "$MNT/latest/" >/dev/null || exit 1; sleep 0.1; done &
LISTER=$!
python3 - "$MNT" "$WORK" <<'PY' || fail "a verifying reader saw wrong data or an error"
import os, random, sys, threading
mnt, work = sys.argv[1], sys.argv[2]
src = {p: open(os.path.join(work, d), "rb").read() for p, d in (("wed", "d2"), ("branch", "d3"), ("tue", "d1"))}
errors = []
def randomly(point, seed):
    r = random.Random(seed)
    data = src[point]
    fd = os.open(os.path.join(mnt, point, "disk.raw"), os.O_RDONLY)
    for _ in range(3000):
        n = r.choice((1, 512, 4096, 65536, 200000, 1 << 20))
        off = r.randrange(0, len(data) - n)
        if os.pread(fd, n, off) != data[off:off + n]:
            errors.append((point, off, n))
    os.close(fd)
def fully(point):
    with open(os.path.join(mnt, point, "disk-flat.vmdk"), "rb") as f:
        if f.read() != src[point]:
            errors.append((point, "full pass"))
ts = [threading.Thread(target=randomly, args=("wed", 1)), threading.Thread(target=randomly, args=("branch", 2)),
      threading.Thread(target=fully, args=("tue",))]
for t in ts: t.start()
for t in ts: t.join()
print("mismatches:", errors[:5]) if errors else None
sys.exit(1 if errors else 0)
PY
wait $FIO || { cat "$WORK/fio.out"; fail "fio failed"; }
grep -q "err= 0" "$WORK/fio.out" || { cat "$WORK/fio.out"; fail "fio saw errors"; }
wait $ADD || fail "imgbackup during the load failed"
wait $LISTER || fail "listing the root during the load failed"
for ((i = 0; i < 50; i++)); do [[ -e $MNT/thu ]] && break; sleep 0.1; done
[[ $(readlink "$MNT/latest") == thu ]] || fail "latest is not the new point thu"
for pd in $POINTS thu:d1; do
	cmp "$MNT/${pd%%:*}/disk.raw" "$WORK/${pd#*:}" || fail "${pd%%:*} differs after the load"
done
unmount_chain

# Writable: two writers fill disjoint regions of wed/disk.raw (1 MiB pieces, the first
# write creates the overlay) while readers check the untouched rest through
# disk-flat.vmdk and disk.raw and a third thread stats the files; afterwards every byte
# is the pattern or the source.
mount_chain "$CHAIN" --cache-size 8M --overlay "$WORK/overlay"
python3 - "$MNT" "$WORK" <<'PY' || fail "a writer or reader of the writable mount failed"
import os, random, sys, threading
mnt, work = sys.argv[1], sys.argv[2]
src = open(os.path.join(work, "d2"), "rb").read()
MIB = 1 << 20
regions = {0: range(0, 8), 1: range(16, 24)}          # MiB pieces each writer owns
def pattern(i):
    return bytes([(i * 37 + 11) & 0xff]) * MIB
errors = []
done = threading.Event()
def writer(w):
    fd = os.open(os.path.join(mnt, "wed", "disk.raw"), os.O_RDWR)
    for i in regions[w]:
        if os.pwrite(fd, pattern(i), i * MIB) != MIB:
            errors.append(("short write", i))
    os.fsync(fd)
    os.close(fd)
def reader(name, seed):
    r = random.Random(seed)
    fd = os.open(os.path.join(mnt, "wed", name), os.O_RDONLY)
    n = 0
    while not done.is_set() or n < 200:
        off = r.randrange(32 * MIB, len(src) - 65536)
        ln = r.choice((512, 4096, 65536))
        if os.pread(fd, ln, off) != src[off:off + ln]:
            errors.append((name, off, ln))
        n += 1
    os.close(fd)
def stater():
    while not done.is_set():
        for f in ("disk.raw", "disk-flat.vmdk", "disk.vmdk"):
            os.stat(os.path.join(mnt, "wed", f))
rs = [threading.Thread(target=reader, args=("disk-flat.vmdk", 3)),
      threading.Thread(target=reader, args=("disk.raw", 4)), threading.Thread(target=stater)]
ws = [threading.Thread(target=writer, args=(w,)) for w in regions]
for t in rs + ws: t.start()
for t in ws: t.join()
done.set()
for t in rs: t.join()
with open(os.path.join(mnt, "wed", "disk-flat.vmdk"), "rb") as f:
    got = f.read()
want = bytearray(src)
for w in regions:
    for i in regions[w]:
        want[i * MIB:(i + 1) * MIB] = pattern(i)
if got != want:
    errors.append("final contents")
print("errors:", errors[:5]) if errors else None
sys.exit(1 if errors else 0)
PY
unmount_chain
echo "ok"
