#!/bin/bash
# mount-concurrent.sh: fio random and sequential readers (buffered and O_DIRECT) on two
# points at once, while three more readers verify random ranges and a full pass against
# the sources: every byte is right, no reader sees an error.  A small cache forces
# eviction under the load.
. "$(dirname "$0")/mount-lib.sh"
requires fio

make_chain 64
mount_chain --cache-size 8M

fio --output="$WORK/fio.out" --runtime=6 --time_based --ioengine=psync --group_reporting \
	--name=rand --filename="$MNT/wed/disk.raw" --rw=randread --bs=4k --direct=1 --numjobs=2 \
	--name=seq --filename="$MNT/branch/disk-flat.vmdk" --rw=read --bs=1M --direct=0 \
	--name=seqd --filename="$MNT/wed/disk-flat.vmdk" --rw=read --bs=128k --direct=1 &
FIO=$!
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
for pd in $POINTS; do
	cmp "$MNT/${pd%%:*}/disk.raw" "$WORK/${pd#*:}" || fail "${pd%%:*} differs after the load"
done
unmount_chain
echo "ok"
